"""The status contract, from a subscriber's point of view, against a real mosquitto.

A subscriber that keeps the newest status of a session (``streamer.mqtt.status_rule``: highest
seq, the will winning a tie) ends with the truth across a cut network link (the will goes out)
and broker kills; status seqs are allocated only for statuses that are published, in order; a
broker that stalls (SIGSTOP) is slowness, not death.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.mqtt.status_rule import newest_status
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource
from tests.streaming_helpers import PROCEDURE, prior_planner, write_timeline

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto, Subscriber

pytestmark = [pytest.mark.timeout(90)]

ROOM = "or-s"
STATUS = f"llm-sap/v1/{ROOM}/status"


class CuttableProxy:
    """A TCP proxy to the broker whose live connections can be cut (a network loss: no DISCONNECT)."""

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.blocked = False  # refuse new connections (the network is down for a while)

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> int:
        """Abort every live connection (RST both ways); new ones are accepted again."""
        writers, self._writers = list(self._writers), set()
        for w in writers:
            w.transport.abort()
        return len(writers) // 2

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _service(tmp_path: Path, broker: str, *, speed: float, will_delay_s: int = 5) -> Service:
    timeline = write_timeline(tmp_path / "timeline.csv")
    cfg = ServiceConfig(
        streams=(StreamConfig(room=ROOM, source="synthetic"),),
        recognizer=f"timeline:{timeline}",
        recognizer_rate_hz=5.0,
        refresh_text=False,
        mqtt=MqttConfig(broker=broker, will_delay_s=will_delay_s),
    )

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(
            PROCEDURE, duration_s=34.0, fps=10.0, size=(32, 32), realtime=True, speed=speed
        )

    return Service(cfg, planner_factory=prior_planner, source_factory=source)


def _statuses(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages if m.topic == STATUS]


def _kept(sub: Subscriber) -> dict[str, Any] | None:
    out = newest_status(_statuses(sub))
    return dict(out) if out is not None else None


async def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_subscriber_keeping_the_newest_status_ends_with_the_truth_across_cuts_and_kills(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    proxy = await CuttableProxy(mosquitto.port).start()
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), [STATUS]).start()
    url = mosquitto.url("service").replace(f":{mosquitto.port}", f":{proxy.port}")
    service = _service(tmp_path, url, speed=3.0, will_delay_s=0)  # the will goes out at once
    task = asyncio.create_task(service.run())
    try:
        assert await _wait(lambda: (_kept(sub) or {}).get("stream") == "running", 10), _statuses(sub)
        run = service.runs[0]
        # 1. the link is cut (no DISCONNECT): the broker publishes the will; the rule must keep it
        assert await _wait(lambda: run.publisher.is_connected, 5)
        await asyncio.sleep(0.3)
        assert proxy.cut() >= 1
        assert await _wait(lambda: any(p.get("will") for p in _statuses(sub)), 10), _statuses(sub)
        will = next(p for p in _statuses(sub) if p.get("will"))
        assert will["state"] == "offline" and will["reason"] == "connection lost"
        kept_after_will = _kept(sub)
        # 2. it reconnects and announces: the announcement beats the will
        assert await _wait(lambda: (_kept(sub) or {}).get("state") == "online", 10), _statuses(sub)
        # 3. the broker is killed and restarted (no will: the broker itself died)
        mosquitto.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        mosquitto.start()
        (state,) = await asyncio.wait_for(task, 40)
        assert state.stream == "ended"
        final = lambda: (_kept(sub) or {}).get("reason") == "shutdown"  # noqa: E731
        assert await _wait(final, 10), _statuses(sub)
    finally:
        await sub.stop()
        await proxy.stop()
    assert kept_after_will is not None and kept_after_will.get("will") is True, kept_after_will
    statuses = _statuses(sub)
    kept = _kept(sub)
    assert kept is not None and kept["state"] == "offline" and kept["seq"] == max(p["seq"] for p in statuses)
    # seqs: every allocated one was published (no gap), first sightings in increasing order
    firsts: list[int] = []
    for p in statuses:
        if not p.get("will") and p["seq"] not in firsts:
            firsts.append(p["seq"])
    assert firsts == sorted(firsts), firsts
    assert set(firsts) == set(range(1, kept["seq"] + 1)), firsts
    assert kept["dropped"] == {"expired": 0, "overflow": 0, "shutdown": 0}


async def test_a_stalled_broker_is_slowness_not_death(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    topics = [f"llm-sap/v1/{ROOM}/status", f"llm-sap/v1/{ROOM}/clip"]
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), topics).start()
    service = _service(tmp_path, mosquitto.url("service"), speed=4.0)
    task = asyncio.create_task(service.run())
    try:
        assert await _wait(lambda: (_kept(sub) or {}).get("stream") == "running", 10)
        await asyncio.sleep(0.5)
        assert mosquitto.proc is not None
        mosquitto.proc.send_signal(signal.SIGSTOP)  # the broker stalls for 3 s: PUBACKs wait
        try:
            await asyncio.sleep(3.0)
        finally:
            mosquitto.proc.send_signal(signal.SIGCONT)
        (state,) = await asyncio.wait_for(task, 40)
        assert state.stream == "ended"
        assert await _wait(lambda: (_kept(sub) or {}).get("reason") == "shutdown", 10)
    finally:
        await sub.stop()
    stats = service.runs[0].publisher.stats
    assert stats["reconnects"] == 0 and stats["slow_pubacks"] >= 1, stats
    offline = [p for p in _statuses(sub) if p["state"] == "offline"]
    assert [p["reason"] for p in offline] == ["shutdown"], offline  # no false "connection lost"
    clips = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/clip")]
    ids = [p["id"] for p in clips]
    assert len(ids) == len(set(ids)) and len(ids) == 2 * len(PROCEDURE), len(ids)  # no duplicate clip event


async def test_with_a_will_delay_a_blip_shows_no_offline_and_a_real_outage_does(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    proxy = await CuttableProxy(mosquitto.port).start()
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), [STATUS]).start()
    url = mosquitto.url("service").replace(f":{mosquitto.port}", f":{proxy.port}")
    service = _service(tmp_path, url, speed=2.0, will_delay_s=2)
    task = asyncio.create_task(service.run())
    try:
        assert await _wait(lambda: (_kept(sub) or {}).get("stream") == "running", 10), _statuses(sub)
        run = service.runs[0]
        assert await _wait(lambda: run.publisher.is_connected, 5)
        await asyncio.sleep(0.3)
        proxy.cut()  # a blip: back within the will delay
        assert await _wait(lambda: run.publisher.stats["reconnects"] >= 1 and run.publisher.is_connected, 5)
        await asyncio.sleep(3.0)  # past the delay: the broker dropped the will
        assert not any(p["state"] == "offline" for p in _statuses(sub)), _statuses(sub)
        proxy.blocked = True  # an outage longer than the delay: subscribers must learn it
        proxy.cut()
        assert await _wait(lambda: any(p.get("will") for p in _statuses(sub)), 10), _statuses(sub)
        assert (_kept(sub) or {}).get("state") == "offline"
        proxy.blocked = False
        assert await _wait(lambda: (_kept(sub) or {}).get("state") == "online", 15), _statuses(sub)
        (state,) = await asyncio.wait_for(task, 40)
        assert state.stream == "ended"
        assert await _wait(lambda: (_kept(sub) or {}).get("reason") == "shutdown", 10)
    finally:
        await sub.stop()
        await proxy.stop()
