"""MQTT publisher: one supervisor task owns the connection; the pipeline only enqueues.

- ``publish(msg)`` is synchronous and never blocks: it puts into a bounded :class:`Outbox`.
- ``run()`` connects (a NEW aiomqtt client per attempt, with the Last Will), publishes the
  on-connect messages (the retained "online" status), then drains the outbox in order with QoS 1,
  popping a message only after the broker acknowledged it. Any connection error: log, capped
  jittered exponential backoff, reconnect. ``protocol="auto"`` tries MQTT 5, falls back to 3.1.1.
- ``close(final)`` flushes the outbox (for at most ``drain_timeout_s``), then the ``final`` messages
  (the explicit "offline", each with its own publish timeout), then disconnects cleanly. Anything
  else that ends a connection (cancellation, network loss, a publish timeout) drops it without
  DISCONNECT, so the broker publishes the Last Will.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as mqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streamer.mqtt.outbox import Outbox, OutMessage
from streamer.mqtt.url import BrokerSettings

log = structlog.get_logger("streamer.mqtt")

UNSUPPORTED_PROTOCOL = (132, 1)  # MQTT 5 reason code; MQTT 3.1.1 CONNACK return code
CONNECT_TIMEOUT_S = 5.0
V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311
COUNTERS = (
    "published",  # acknowledged by the broker (PUBACK), ``rejected`` included
    "rejected",  # MQTT 5 PUBACK with a failure reason (e.g. 135: the ACL denies the topic); not retried
    "connects",
    "reconnects",
    "connect_attempts",
    "connect_failures",
    "dropped_closed",  # publish() after close()
)


def tls_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    """The client TLS context for ``settings`` (None without TLS)."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class MqttPublisher:
    """At-least-once MQTT publishing with a bounded outbox and a supervised connection."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        outbox_size: int = 1000,
        will: Callable[[], OutMessage] | None = None,
        on_connect_messages: Callable[[], list[OutMessage]] | None = None,
        publish_timeout_s: float = 1.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        if not client_id:
            raise ValueError("MQTT client_id must be non-empty (and unique per process)")
        if publish_timeout_s <= 0 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError(
                f"need publish_timeout_s > 0 and 0 < backoff_initial_s <= backoff_max_s, got "
                f"{publish_timeout_s}, {backoff_initial_s}, {backoff_max_s}"
            )
        self.settings = settings
        self.client_id = client_id
        self._will = will
        self._on_connect_messages = on_connect_messages
        self._publish_timeout_s = publish_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._tls = tls_context(settings)
        self._outbox = Outbox(outbox_size)
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._final: list[OutMessage] = []
        self._drain_deadline = math.inf  # loop time
        self._run_task: asyncio.Task[Any] | None = None
        self._force_cancelled = False
        self._attempt_connected = False
        self._fell_back = settings.protocol == "3.1.1"
        self._v5_confirmed = False
        self._protocol: str | None = None
        self._counts = dict.fromkeys(COUNTERS, 0)

    # -- the pipeline side ------------------------------------------------------------------

    def publish(self, msg: OutMessage) -> None:
        """Enqueue ``msg`` (never blocks; oldest/expired dropped when full). Call on the event loop."""
        if self._closing.is_set():
            self._counts["dropped_closed"] += 1
            return
        self._outbox.put(msg)
        self._wakeup.set()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected (and the on-connect messages are out). False on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def stats(self) -> dict[str, Any]:
        out = self._outbox.stats
        return {
            "connected": self.is_connected,
            "protocol": self._protocol if self.is_connected else None,
            **self._counts,
            "dropped_expired": out["dropped_expired"],
            "dropped_overflow": out["dropped_overflow"],
            "outbox": out["outbox"],
            "outbox_max": out["outbox_max"],
        }

    # -- the supervisor ---------------------------------------------------------------------

    async def run(self) -> None:
        """Own the connection until :meth:`close`. Never raises for broker or network errors."""
        if self._run_task is not None:
            raise RuntimeError("MqttPublisher.run() may be called once")
        self._run_task = asyncio.current_task()
        failures = 0
        try:
            while not self._closing.is_set():
                if await self._attempt():
                    continue  # fell back to MQTT 3.1.1: retry at once
                if self._closing.is_set():
                    break
                if self._attempt_connected:
                    failures = 0  # a working connection was lost: start the backoff over
                delay = self._backoff_delay(failures)
                failures += 1
                log.info("mqtt_backoff", delay_s=round(delay, 3), failures=failures, outbox=len(self._outbox))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._force_cancelled and task is not None and task.uncancel() == 0:
                return  # close() gave up waiting: that's a normal end
            raise
        finally:
            self._connected.clear()
            self._stopped.set()
            log.info("mqtt_publisher_stopped", **{k: v for k, v in self.stats.items() if k != "protocol"})

    async def _attempt(self) -> bool:
        """One connection, from CONNECT to its end. True: retry at once (fell back to MQTT 3.1.1)."""
        self._attempt_connected = False
        try:
            await self._connection(V311 if self._fell_back else V5)
        except MqttConnectError as exc:
            code = _code(exc)
            if code in UNSUPPORTED_PROTOCOL and self._may_fall_back():
                log.info("mqtt_protocol_fallback", to="3.1.1", code=code)
                self._fell_back = True
                return True
            log.warning("mqtt_connect_refused", code=code, reason=_reason(exc))
        except (aiomqtt.MqttError, OSError) as exc:
            detail = str(exc)[:160]  # the library's words: "Connection refused", "certificate verify failed"
            log.warning("mqtt_connection_error", error=type(exc).__name__, code=_code(exc), detail=detail)
        except Exception as exc:  # the supervisor survives anything; a bug shows as a traceback
            log.error("mqtt_unexpected_error", error=type(exc).__name__, exc_info=True)
        if not self._attempt_connected:
            self._counts["connect_failures"] += 1
        return False

    def _may_fall_back(self) -> bool:
        return self.settings.protocol == "auto" and not self._fell_back

    def _backoff_delay(self, failures: int) -> float:
        """Capped exponential backoff with jitter (50–100 % of the step)."""
        return min(self._backoff_max_s, self._backoff_initial_s * 2.0**failures) * random.uniform(0.5, 1)

    def _client(self, protocol: aiomqtt.ProtocolVersion, *, with_will: bool = True) -> aiomqtt.Client:
        v5 = protocol == V5
        will = None
        if self._will is not None and with_will:
            w = self._will()
            will = aiomqtt.Will(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client = aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=self.settings.password,
            identifier=self.client_id,
            protocol=protocol,
            will=will,
            clean_session=None if v5 else True,
            clean_start=True if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,  # paho: 3.1.1 takes clean_session
            keepalive=self.settings.keepalive,
            timeout=CONNECT_TIMEOUT_S,
            tls_context=self._tls,
            tls_insecure=self.settings.tls_insecure if self._tls else None,
        )
        self._count_rejections(client)
        return client

    def _count_rejections(self, client: aiomqtt.Client) -> None:
        """aiomqtt drops the PUBACK reason code; an ACL-denied publish would go unnoticed (MQTT 5 only:
        a 3.1.1 broker acknowledges and discards). Wraps paho's callback (``_client``, aiomqtt 2.5)."""
        paho = client._client
        original = cast(Callable[..., None] | None, paho.on_publish)

        def on_publish(c: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                self._counts["rejected"] += 1
                log.warning("mqtt_publish_rejected", code=getattr(reason, "value", None), reason=str(reason))
            if original is not None:
                original(c, userdata, mid, reason, properties)

        paho.on_publish = on_publish

    async def _connection(self, protocol: aiomqtt.ProtocolVersion) -> None:
        """One connection: connect, serve until closed (clean) or broken (abort: the will goes out)."""
        self._counts["connect_attempts"] += 1
        name = "5" if protocol == V5 else "3.1.1"
        log.debug("mqtt_connecting", protocol=name, attempt=self._counts["connect_attempts"])
        if name == "5" and self._may_fall_back() and self._will is not None and not self._v5_confirmed:
            await self._probe_v5()
            if self._fell_back:
                protocol, name = V311, "3.1.1"
        client = self._client(protocol)  # a NEW client per attempt: a reused one misses CONNACK errors
        await client.__aenter__()
        clean = False
        try:
            self._protocol = name
            if self._counts["connects"]:
                self._counts["reconnects"] += 1
            self._counts["connects"] += 1
            self._attempt_connected = True
            await self._serve(client, v5=protocol == V5)
            clean = True
        finally:
            self._connected.clear()
            if clean:
                await client.__aexit__(None, None, None)
                log.info("mqtt_disconnected", published=self._counts["published"], outbox=len(self._outbox))
            else:
                _abort(client)

    async def _probe_v5(self) -> None:
        """Does the broker speak MQTT 5? Asked once, without the will: amqtt (3.1.1 only) answers an
        MQTT 5 CONNECT with "unsupported protocol" at once, but one that carries a will never."""
        try:
            async with self._client(V5, with_will=False):
                pass
        except MqttConnectError as exc:
            if _code(exc) not in UNSUPPORTED_PROTOCOL:
                raise
            log.info("mqtt_protocol_fallback", to="3.1.1", code=_code(exc))
            self._fell_back = True
            return
        self._v5_confirmed = True

    async def _serve(self, client: aiomqtt.Client, *, v5: bool) -> None:
        watcher = asyncio.create_task(_until_disconnected(client), name="mqtt-disconnect-watch")
        watcher.add_done_callback(lambda _: self._wakeup.set())
        try:
            for msg in self._on_connect_messages() if self._on_connect_messages else []:
                await self._send(client, watcher, msg, v5=v5, timeout=self._publish_timeout_s)
            self._connected.set()
            log.info(
                "mqtt_connected",
                protocol=self._protocol,
                reconnects=self._counts["reconnects"],
                outbox=len(self._outbox),
            )
            while True:
                await self._drain(client, watcher, v5=v5)
                if self._closing.is_set():
                    for final in self._final:  # own budget: the explicit "offline" goes out even so
                        await self._send(client, watcher, final, v5=v5, timeout=self._publish_timeout_s)
                    return
                self._wakeup.clear()
                if watcher.done():
                    watcher.result()  # raises the disconnect error
                await self._wakeup.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _drain(self, client: aiomqtt.Client, watcher: asyncio.Task[None], *, v5: bool) -> None:
        """Publish the outbox in order until it is empty (or, while closing, the drain time is up)."""
        loop = asyncio.get_running_loop()
        while (head := self._outbox.peek()) is not None:
            left = self._drain_deadline - loop.time() if self._closing.is_set() else math.inf
            if left <= 0:
                log.warning("mqtt_drain_timeout", outbox_left=len(self._outbox))
                return
            try:
                await self._send(client, watcher, head, v5=v5, timeout=min(self._publish_timeout_s, left))
            except aiomqtt.MqttError:
                if self._closing.is_set() and not watcher.done():
                    continue  # cut short by the drain deadline on a live connection: the loop logs it
                raise
            self._outbox.ack(head)

    async def _send(
        self,
        client: aiomqtt.Client,
        watcher: asyncio.Task[None],
        msg: OutMessage,
        *,
        v5: bool,
        timeout: float,
    ) -> None:
        """Publish and wait for the PUBACK (bounded); a lost connection ends the wait at once."""
        properties = None
        if v5 and msg.expires_at is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, math.ceil(msg.expires_at - time.time()))
        publish = asyncio.ensure_future(
            client.publish(msg.topic, msg.payload, msg.qos, msg.retain, properties, timeout=timeout)
        )
        try:
            await asyncio.wait((publish, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not publish.done():
                publish.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await publish
        if publish.cancelled():
            watcher.result()  # raises the disconnect error
            raise aiomqtt.MqttError("disconnected while publishing")
        publish.result()  # raises MqttError on timeout or a refused publish
        self._counts["published"] += 1

    # -- shutdown ---------------------------------------------------------------------------

    async def close(self, final: Sequence[OutMessage] = (), drain_timeout_s: float = 2.0) -> None:
        """If connected: flush the outbox (at most ``drain_timeout_s``), then ``final``; disconnect.

        Ends run(). Without a connection the outbox and ``final`` are dropped (the retained status
        is then what the Last Will left).
        """
        if self._closing.is_set():
            await self._stopped.wait()
            return
        self._final = list(final)
        self._drain_deadline = asyncio.get_running_loop().time() + drain_timeout_s
        self._closing.set()
        self._wakeup.set()
        if self._run_task is None:
            self._stopped.set()
            return
        try:
            # run() ends by itself: the drain is bounded and so is a connect attempt.
            budget = drain_timeout_s + self._publish_timeout_s * len(self._final) + CONNECT_TIMEOUT_S
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), budget)
        except TimeoutError:
            self._force_cancelled = True
            self._run_task.cancel()
            await self._stopped.wait()
        log.info("mqtt_publisher_closed", outbox_left=len(self._outbox), published=self._counts["published"])


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Returns never: raises MqttError when the connection drops (we subscribe to nothing)."""
    async for _ in client.messages:
        pass


def _abort(client: aiomqtt.Client) -> None:
    """Drop the TCP connection without DISCONNECT, so the broker publishes the Last Will.

    aiomqtt offers no public way to do this; its paho client is ``_client`` (pinned aiomqtt 2.5).
    Reading the shut-down socket makes paho close it and unregister from the event loop now.
    """
    paho = client._client
    shutdown = getattr(paho.socket(), "shutdown", None)
    if shutdown is not None:  # else the connection is gone already
        with contextlib.suppress(OSError):
            shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):  # best effort: the socket is dead either way
            paho.loop_read()
    disconnected = client._disconnected
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()  # mark it retrieved: no "Future exception was never retrieved" noise


def _code(exc: BaseException) -> int | None:
    rc = getattr(exc, "rc", None)
    if rc is None:
        return None
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def _reason(exc: BaseException) -> str:
    rc = getattr(exc, "rc", None)
    return str(rc) if rc is not None else type(exc).__name__
