"""MQTT test helpers: a real mosquitto run from configs/mosquitto.conf, the embedded broker, a subscriber.

Registered in tests/conftest.py with ``pytest_plugins = ["tests.mqtt_fixtures"]``.
Fixtures: ``mosquitto`` (a started :class:`Mosquitto`, users ``service`` and ``monitor``, ACL from
configs/mosquitto.acl.example), ``embedded_broker`` (a started EmbeddedBroker) and
``mqtt_subscriber`` (the :class:`Subscriber` class). Test modules import this module only under
``TYPE_CHECKING``: importing it before pytest registers it as a plugin defeats assert rewriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamer.mqtt.broker import EmbeddedBroker
from streamer.mqtt.url import BrokerSettings, parse_broker_url

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "configs" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "configs" / "mosquitto.acl.example"
MOSQUITTO = os.environ.get("MOSQUITTO", shutil.which("mosquitto") or "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
USERS = {"service": "service-secret", "monitor": "monitor-secret"}
# Directives of the shipped config that name this site's ports and files: the test replaces them.
SITE_SPECIFIC = {
    "listener",
    "persistence_location",
    "password_file",
    "acl_file",
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "require_certificate",
    "tls_version",
    "log_dest",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_config(shipped: str, *, port: int, workdir: Path, tls: bool = False) -> str:
    """The shipped config with its site-specific lines replaced by this test broker's."""
    kept = [line for line in shipped.splitlines() if not _site_specific(line)]
    listener = [f"listener {port} 127.0.0.1"]
    if tls:
        listener += [f"certfile {workdir / 'server.crt'}", f"keyfile {workdir / 'server.key'}"]
    return "\n".join(
        [
            *kept,
            "# --- test broker (tests/mqtt_fixtures.py) ---",
            f"persistence_location {workdir / 'data'}/",
            f"password_file {workdir / 'passwd'}",
            f"acl_file {workdir / 'acl'}",
            "log_dest stderr",
            *listener,
            "",
        ]
    )


def _site_specific(line: str) -> bool:
    words = line.split(maxsplit=1)
    return bool(words) and words[0] in SITE_SPECIFIC


class Mosquitto:
    """One mosquitto process on a fixed loopback port; stop(signal) and restart() keep its data."""

    def __init__(self, workdir: Path, port: int, *, tls: bool = False) -> None:
        self.workdir = workdir
        self.port = port
        self.tls = tls
        self.ca_file = workdir / "ca.crt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        self._prepare()

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir()
        if self.tls:
            make_test_certificates(self.workdir)
        shipped = SHIPPED_CONF.read_text()
        self.conf_path.write_text(render_config(shipped, port=self.port, workdir=self.workdir, tls=self.tls))
        shutil.copyfile(SHIPPED_ACL, self.workdir / "acl")
        passwd = self.workdir / "passwd"
        for i, (user, password) in enumerate(USERS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(passwd), user, password], check=True)
        if os.geteuid() == 0:  # mosquitto drops to user `mosquitto` before it reads these files
            entry = pwd.getpwnam("mosquitto")
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout_s: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("mosquitto already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s: {self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 5.0) -> None:
        """Send ``sig`` and wait for the process to end (SIGKILL after ``timeout_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Start again on the same port with the same data (after stop())."""
        self.stop()
        self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def saved_since(self, wall_time: float) -> bool:
        """Has mosquitto written its database (sessions, queues) after ``wall_time`` (time.time())?"""
        db = self.workdir / "data" / "mosquitto.db"
        return db.exists() and db.stat().st_mtime > wall_time

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(text.splitlines()[-lines:])

    def settings(self, user: str | None = "service", password: str | None = None) -> BrokerSettings:
        settings = parse_broker_url(self.url(user, password))
        return replace(settings, ca_file=str(self.ca_file)) if self.tls else settings

    def url(self, user: str | None = "service", password: str | None = None) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        if user is None:
            return f"{scheme}://127.0.0.1:{self.port}"
        return f"{scheme}://{user}:{password or USERS[user]}@127.0.0.1:{self.port}"


def make_test_certificates(workdir: Path) -> None:
    """A throwaway CA (ca.crt) and a server certificate for 127.0.0.1 (server.crt, server.key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    yield from _mosquitto(tls=False)


@pytest.fixture
def mosquitto_tls() -> Iterator[Mosquitto]:
    """Like ``mosquitto``, but its listener speaks TLS (server certificate from a throwaway CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make test certificates")
    yield from _mosquitto(tls=True)


def _mosquitto(*, tls: bool) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).is_file() or not Path(MOSQUITTO_PASSWD).is_file():
        pytest.skip(f"mosquitto not installed ({MOSQUITTO}, {MOSQUITTO_PASSWD}): apt-get install mosquitto")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("mosquitto")
        except KeyError:
            pytest.skip("running as root but there is no `mosquitto` user for the broker to drop to")
    workdir = Path(tempfile.mkdtemp(prefix="llm-sap-mosquitto-"))  # not tmp_path: its parents are 0700
    broker = Mosquitto(workdir, free_port(), tls=tls)
    try:
        broker.start()
        yield broker
    finally:
        broker.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def embedded_broker() -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
def mqtt_subscriber() -> type[Subscriber]:
    """The :class:`Subscriber` class (test modules get it here: importing this module defeats rewriting)."""
    return Subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.monotonic)


class Subscriber:
    """A QoS 1 subscriber that reconnects (new client each time) and re-subscribes after each connect.

    ``persistent=True`` (MQTT 5): clean_start=False with a session expiry, so the broker queues
    messages for it while it is away.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topics: list[str],
        *,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
        persistent: bool = True,
        client_id: str | None = None,
        reconnect_delay_s: float = 0.05,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.protocol = protocol
        self.persistent = persistent
        self.client_id = client_id or f"test-sub-{uuid.uuid4().hex[:8]}"
        self.reconnect_delay_s = reconnect_delay_s
        self.messages: list[Received] = []
        self.connects = 0
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        v5 = self.protocol == aiomqtt.ProtocolVersion.V5
        properties = None
        if v5 and self.persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 300
        return aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=self.settings.password,
            identifier=self.client_id,
            protocol=self.protocol,
            clean_start=not self.persistent if v5 else 3,
            clean_session=None if v5 else not self.persistent,
            properties=properties,
            timeout=2,
        )

    async def _loop(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    self.connects += 1
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        self.messages.append(Received(str(m.topic), payload, bool(m.retain)))
                        self._changed.set()
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(self.reconnect_delay_s)

    async def start(self, timeout_s: float = 5.0) -> Subscriber:
        self._task = asyncio.create_task(self._loop(), name=f"subscriber-{self.client_id}")
        await asyncio.wait_for(self.subscribed.wait(), timeout_s)
        return self

    async def stop(self) -> None:
        """Disconnect cleanly (a persistent session stays on the broker)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.subscribed.clear()

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate(messages)`` holds; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(self.messages):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.1))
        return True

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
