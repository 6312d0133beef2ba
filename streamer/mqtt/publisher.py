"""MQTT publisher: one supervisor task owns the connection; the pipeline only enqueues.

- ``publish(msg)`` is synchronous and never blocks: it puts into a bounded :class:`Outbox`.
- ``run()`` connects (a NEW aiomqtt client per attempt, with the Last Will), sends the queued
  statuses first, then drains the outbox in order with QoS 1, popping a message only after the
  broker acknowledged it. A slow PUBACK is slowness, not death: the wait lasts as long as the
  connection (whose death MQTT's keepalive decides), with a warning after ``publish_timeout_s``.
  Any connection error: log, capped jittered exponential backoff, reconnect. A broker that refuses
  the credentials or the ACL ("not authorized") is permanent: ``failed`` says why, ``run()`` ends.
  ``protocol="auto"`` tries MQTT 5, falls back to 3.1.1.
- The status contract (README, "Status messages"): before the first connection and after one that
  ended without DISCONNECT (its will may have gone out), ``on_connect_messages()`` is queued as the
  new announcement, unless a status is queued already (then that one is the announcement: no seq is
  spent on a status that says nothing new). The will is built at each CONNECT and repeats the
  ``seq`` of the newest status built so far (``will: true``). A status with a higher seq published
  later makes the will stale: the publisher then disconnects cleanly (the broker drops the will)
  and connects again with a current one. A subscriber that keeps the status with the highest seq,
  the will winning a tie, thus always ends with the truth.
- ``close(final)`` flushes the outbox (for at most ``drain_timeout_s``), then the ``final`` messages
  (the explicit "offline", each with its own publish timeout), then disconnects cleanly. What is
  left in the outbox is dropped, counted (``dropped_shutdown``) and logged at warning level;
  ``final`` may be a function of the drop counts, so the final status says what was lost. Anything
  else that ends a connection (cancellation, network loss) drops it without DISCONNECT, so the
  broker publishes the Last Will.
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

from streamer.mqtt.outbox import STATUS, Outbox, OutMessage
from streamer.mqtt.url import BrokerSettings

log = structlog.get_logger("streamer.mqtt")

UNSUPPORTED_PROTOCOL = (132, 1)  # MQTT 5 reason code; MQTT 3.1.1 CONNACK return code
#: CONNACK / PUBACK codes that retrying cannot fix (MQTT 3.1.1: 4, 5; MQTT 5: 134, 135, 138)
PERMANENT_REFUSALS = {
    4: "bad user name or password",
    5: "not authorized",
    134: "bad user name or password",
    135: "not authorized",
    138: "banned",
}
CONNECT_TIMEOUT_S = 5.0
V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311
FIRST = asyncio.FIRST_COMPLETED
COUNTERS = (
    "published",  # acknowledged by the broker (PUBACK), ``rejected`` included
    "rejected",  # MQTT 5 PUBACK with a failure reason (e.g. 135: the ACL denies the topic); not retried
    "connects",
    "reconnects",
    "connect_attempts",
    "connect_failures",
    "dropped_closed",  # publish() after close() (or after a permanent refusal)
    "dropped_shutdown",  # left in the outbox when close() ended (drain time up, or no connection)
    "slow_pubacks",  # PUBACKs that took longer than publish_timeout_s (the connection was kept)
    "will_refreshes",  # clean reconnects that replaced a stale Last Will
)
FinalMessages = Sequence[OutMessage] | Callable[[dict[str, int]], Sequence[OutMessage]]


class _PermanentRefusal(Exception):
    """The broker refused a publish for good (ACL): end the connection, do not retry."""


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
        will_delay_s: int = 0,
    ) -> None:
        """``will_delay_s`` (MQTT 5): the broker holds the will this long after a lost connection and
        drops it if we are back in time (a broker restart, a blip): no offline for a live service.
        Our session then outlives a connection by that much (clean start off, session expiry)."""
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
        if not 0 <= will_delay_s <= 3600:
            raise ValueError(f"will_delay_s must be in 0..3600, got {will_delay_s}")
        self._will_delay_s = int(will_delay_s)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._tls = tls_context(settings)
        self._outbox = Outbox(outbox_size)
        self._wakeup = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._final: FinalMessages = ()
        self._drain_deadline = math.inf  # loop time
        self._run_task: asyncio.Task[Any] | None = None
        self._force_cancelled = False
        self._attempt_connected = False
        self._fell_back = settings.protocol == "3.1.1"
        self._v5_confirmed = False
        self._protocol: str | None = None
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.failed: str | None = None  # why the broker refuses us for good (then run() ends)
        self._announce = True  # the next connection must announce (first one, or after a will)
        self._will_seq: int | None = None  # the seq the current connection's will repeats
        self._will_stale = False
        self._drops_warned = 0
        self._announcement: list[OutMessage] = []  # on-connect messages not yet acknowledged

    # -- the pipeline side ------------------------------------------------------------------

    def publish(self, msg: OutMessage) -> None:
        """Enqueue ``msg`` (never blocks; oldest/expired dropped when full). Call on the event loop."""
        if self._closing.is_set() or self.failed:
            self._counts["dropped_closed"] += 1
            return
        self._outbox.put(msg)
        self._warn_drops()
        self._wakeup.set()

    def _warn_drops(self) -> None:
        """Outbox policy drops (overflow, expiry) at warning level: the 1st, 10th, 100th, ..."""
        dropped = self._outbox.dropped_overflow + self._outbox.dropped_expired
        if dropped and dropped >= max(1, self._drops_warned * 10):
            self._drops_warned = dropped
            log.warning(
                "mqtt_outbox_dropped",
                overflow=self._outbox.dropped_overflow,
                expired=self._outbox.dropped_expired,
                outbox=len(self._outbox),
            )

    @property
    def dropped(self) -> dict[str, int]:
        """Messages lost by policy so far: expired, overflow, and left at shutdown."""
        return {
            "expired": self._outbox.dropped_expired,
            "overflow": self._outbox.dropped_overflow,
            "shutdown": self._counts["dropped_shutdown"],
        }

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
            while not self._closing.is_set() and not self.failed:
                if await self._attempt():
                    continue  # fell back to MQTT 3.1.1, or replaced a stale will: at once
                if self._closing.is_set() or self.failed:
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
            if await self._connection(V311 if self._fell_back else V5):
                return True
        except MqttConnectError as exc:
            code = _code(exc)
            if code in UNSUPPORTED_PROTOCOL and self._may_fall_back():
                log.info("mqtt_protocol_fallback", to="3.1.1", code=code)
                self._fell_back = True
                return True
            if code in PERMANENT_REFUSALS:
                self._refused(f"connection refused: {PERMANENT_REFUSALS[code]} (code {code})")
            else:
                log.warning("mqtt_connect_refused", code=code, reason=_reason(exc))
        except _PermanentRefusal:
            pass  # failed is set, the connection was dropped (the will tells subscribers)
        except (aiomqtt.MqttError, OSError) as exc:
            detail = str(exc)[:160]  # the library's words: "Connection refused", "certificate verify failed"
            log.warning("mqtt_connection_error", error=type(exc).__name__, code=_code(exc), detail=detail)
        except Exception as exc:  # the supervisor survives anything; a bug shows as a traceback
            log.error("mqtt_unexpected_error", error=type(exc).__name__, exc_info=True)
        if not self._attempt_connected:
            self._counts["connect_failures"] += 1
        return False

    def _refused(self, why: str) -> None:
        """A refusal retrying cannot fix: fail for good, loudly (the service fails the room)."""
        s = self.settings
        self.failed = f"MQTT broker {s.host}:{s.port} {why}: check the user, password and ACL"
        log.error("mqtt_refused_permanently", reason=self.failed, user=s.username)
        self._wakeup.set()

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
            self._will_seq, self._will_stale = w.seq, False
            will_properties = None
            if v5 and self._will_delay_s:
                will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
                will_properties.WillDelayInterval = self._will_delay_s
            will = aiomqtt.Will(w.topic, w.payload, qos=w.qos, retain=w.retain, properties=will_properties)
        delayed = will is not None and v5 and self._will_delay_s > 0  # not for the bare v5 probe
        connect_properties = None
        if delayed:  # the session must outlive the connection for the delay to hold
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = self._will_delay_s + 60
        client = aiomqtt.Client(
            self.settings.host,
            self.settings.port,
            username=self.settings.username,
            password=self.settings.password,
            identifier=self.client_id,
            protocol=protocol,
            will=will,
            clean_session=None if v5 else True,
            # paho: 3.1.1 takes clean_session; MQTT 5 resumes the session when the will is delayed
            clean_start=(not delayed) if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties,
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
                code = getattr(reason, "value", None)
                log.warning("mqtt_publish_rejected", code=code, reason=str(reason))
                if code in PERMANENT_REFUSALS:
                    self._refused(f"refused a publish: {PERMANENT_REFUSALS[code]} (code {code})")
            if original is not None:
                original(c, userdata, mid, reason, properties)

        paho.on_publish = on_publish

    async def _connection(self, protocol: aiomqtt.ProtocolVersion) -> bool:
        """One connection: connect, serve until closed (clean) or broken (abort: the will goes out).
        True: it ended cleanly to replace a stale will (connect again at once)."""
        self._counts["connect_attempts"] += 1
        name = "5" if protocol == V5 else "3.1.1"
        log.debug("mqtt_connecting", protocol=name, attempt=self._counts["connect_attempts"])
        if name == "5" and self._may_fall_back() and self._will is not None and not self._v5_confirmed:
            await self._probe_v5()
            if self._fell_back:
                protocol, name = V311, "3.1.1"
        queued_status = self._outbox.has(STATUS) or bool(self._announcement)
        if self._announce and not queued_status and self._on_connect_messages is not None:
            self._announcement = list(self._on_connect_messages())  # built now, sent first once connected
        client = self._client(protocol)  # a NEW client per attempt: a reused one misses CONNACK errors
        await client.__aenter__()
        clean = False
        refresh = False
        try:
            self._protocol = name
            if self._counts["connects"] and self._announce:
                self._counts["reconnects"] += 1
            self._counts["connects"] += 1
            self._attempt_connected = True
            self._announce = True  # until this connection ends cleanly
            refresh = await self._serve(client, v5=protocol == V5)
            clean = True
        finally:
            self._connected.clear()
            if clean:
                await client.__aexit__(None, None, None)
                self._announce = False  # DISCONNECT: the broker dropped the will, our status stands
                if refresh:
                    self._counts["will_refreshes"] += 1
                    log.debug("mqtt_will_refreshed", seq=self._will_seq)
                else:
                    log.info(
                        "mqtt_disconnected", published=self._counts["published"], outbox=len(self._outbox)
                    )
            else:
                _abort(client)
        return refresh

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

    async def _serve(self, client: aiomqtt.Client, *, v5: bool) -> bool:
        """Serve one connection until close() (False) or a stale will (True); raises when it breaks."""
        watcher = asyncio.create_task(_until_disconnected(client), name="mqtt-disconnect-watch")
        watcher.add_done_callback(lambda _: self._wakeup.set())
        try:
            self._outbox.promote(STATUS)  # queued statuses first: the retained status is the truth
            self._connected.set()
            log.info(
                "mqtt_connected",
                protocol=self._protocol,
                reconnects=self._counts["reconnects"],
                outbox=len(self._outbox),
            )
            while self._announcement:
                await self._send(client, watcher, self._announcement[0], v5=v5, timeout=None)
                self._announcement.pop(0)
            while True:
                await self._drain(client, watcher, v5=v5)
                if self.failed:
                    raise _PermanentRefusal(self.failed)
                if self._closing.is_set():
                    await self._finish(client, watcher, v5=v5)
                    return False
                if self._will_stale:
                    return True
                self._wakeup.clear()
                if watcher.done():
                    watcher.result()  # raises the disconnect error
                await self._wakeup.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _finish(self, client: aiomqtt.Client, watcher: asyncio.Task[None], *, v5: bool) -> None:
        """Closing: count what the drain left, then the final messages (own budget each)."""
        self._drop_left()
        finals = self._final(self.dropped) if callable(self._final) else self._final
        for final in finals:  # the explicit "offline" goes out even when the drain ran out
            await self._send(client, watcher, final, v5=v5, timeout=self._publish_timeout_s)

    def _drop_left(self) -> None:
        left = self._outbox.clear()
        if left:
            self._counts["dropped_shutdown"] += len(left)
            kinds: dict[str, int] = {}
            for msg in left:
                kinds[msg.kind or "other"] = kinds.get(msg.kind or "other", 0) + 1
            log.warning("mqtt_dropped_at_shutdown", dropped=len(left), kinds=kinds)

    async def _drain(self, client: aiomqtt.Client, watcher: asyncio.Task[None], *, v5: bool) -> None:
        """Publish the outbox in order until it is empty (or, while closing, the drain time is up;
        or a status made the will stale: the caller replaces it before going on)."""
        loop = asyncio.get_running_loop()
        while (head := self._outbox.peek()) is not None and not self.failed:
            left = self._drain_deadline - loop.time() if self._closing.is_set() else None
            if left is not None and left <= 0:
                log.warning("mqtt_drain_timeout", outbox_left=len(self._outbox))
                return
            try:
                await self._send(client, watcher, head, v5=v5, timeout=left)
            except aiomqtt.MqttError:
                if self._closing.is_set() and not watcher.done():
                    continue  # cut short by the drain deadline on a live connection: the loop logs it
                raise
            self._outbox.ack(head)
            stale = head.kind == STATUS and head.seq is not None and self._will_seq is not None
            if stale and head.seq > self._will_seq and not self._closing.is_set():  # type: ignore[operator]
                self._will_stale = True
                return

    async def _send(
        self,
        client: aiomqtt.Client,
        watcher: asyncio.Task[None],
        msg: OutMessage,
        *,
        v5: bool,
        timeout: float | None,
    ) -> None:
        """Publish and wait for the PUBACK; a lost connection ends the wait at once. ``timeout``
        None: as long as the connection lives (a PUBACK slower than ``publish_timeout_s`` is
        counted and logged, never taken for a dead broker: the keepalive decides that)."""
        properties = None
        if v5 and msg.expires_at is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, math.ceil(msg.expires_at - time.time()))
        publish = asyncio.ensure_future(
            client.publish(
                msg.topic, msg.payload, msg.qos, msg.retain, properties,
                timeout=math.inf if timeout is None else timeout,
            )
        )  # fmt: skip
        try:
            first_wait = self._publish_timeout_s if timeout is None else None
            done, _ = await asyncio.wait((publish, watcher), timeout=first_wait, return_when=FIRST)
            if not done:
                self._counts["slow_pubacks"] += 1
                log.warning("mqtt_slow_puback", topic=msg.topic, waited_s=first_wait, id=msg.message_id)
                await asyncio.wait((publish, watcher), return_when=FIRST)
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

    async def close(
        self, final: FinalMessages = (), drain_timeout_s: float = 2.0, final_count: int = 1
    ) -> None:
        """If connected: flush the outbox (at most ``drain_timeout_s``), then ``final``; disconnect.

        Ends run(). ``final`` may be a function of the drop counts (``dropped``), called once the
        drain is over. Without a connection the outbox and ``final`` are dropped, counted and logged
        (the retained status is then what the Last Will left).
        """
        if self._closing.is_set():
            await self._stopped.wait()
            return
        self._final = final if callable(final) else list(final)
        finals = final_count if callable(final) else len(self._final)  # type: ignore[arg-type]
        self._drain_deadline = asyncio.get_running_loop().time() + drain_timeout_s
        self._closing.set()
        self._wakeup.set()
        if self._run_task is not None and not self._stopped.is_set():
            try:
                # run() ends by itself: the drain is bounded and so is a connect attempt.
                budget = drain_timeout_s + self._publish_timeout_s * finals + CONNECT_TIMEOUT_S
                await asyncio.wait_for(asyncio.shield(self._stopped.wait()), budget)
            except TimeoutError:
                self._force_cancelled = True
                self._run_task.cancel()
                await self._stopped.wait()
        self._stopped.set()
        self._drop_left()  # never connected again: what was queued is lost, and said so
        log.info("mqtt_publisher_closed", published=self._counts["published"], **self.dropped)


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
