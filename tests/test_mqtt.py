"""The MQTT publisher against a real mosquitto (run from configs/mosquitto.conf) and the embedded amqtt.

A reconnecting publisher loses nothing: a persistent QoS 1 subscriber sees every ``seq`` across a
broker restart (SIGTERM and SIGKILL); duplicates are allowed (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest
from structlog.testing import capture_logs

from streamer.mqtt.outbox import OutMessage
from streamer.mqtt.publisher import MqttPublisher
from streamer.mqtt.url import BrokerSettings, parse_broker_url

if TYPE_CHECKING:  # tests/conftest.py registers it as a plugin; importing it here defeats assert rewriting
    from streamer.mqtt.broker import EmbeddedBroker
    from tests.mqtt_fixtures import Mosquitto, Received, Subscriber

pytestmark = pytest.mark.timeout(60)

ROOM = "or1"
REC = f"llm-sap/v1/{ROOM}/recommendation"
CURRENT = f"llm-sap/v1/{ROOM}/recommendation/current"
STATUS = f"llm-sap/v1/{ROOM}/status"
WILL = {"state": "offline", "reason": "connection lost"}
ONLINE = {"state": "online"}
SHUTDOWN = {"state": "offline", "reason": "shutdown"}


def status(body: dict[str, str]) -> OutMessage:
    return OutMessage(STATUS, json.dumps(body).encode(), retain=True)


def rec(seq: int) -> OutMessage:
    return OutMessage(REC, json.dumps({"seq": seq}).encode(), message_id=f"m{seq}")


def make_publisher(settings: BrokerSettings, **kw: object) -> MqttPublisher:
    options: dict[str, object] = {
        "client_id": f"llm-sap-test-{uuid.uuid4().hex[:8]}",
        "will": lambda: status(WILL),
        "on_connect_messages": lambda: [status(ONLINE)],
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.3,
    }
    options.update(kw)
    return MqttPublisher(settings, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(pub: MqttPublisher, *, connect: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(pub.run())
    try:
        if connect:
            assert await pub.wait_connected(5), pub.stats
        yield task
    finally:
        await pub.close(drain_timeout_s=1.0)
        await task


def seqs(messages: list[Received], topic: str = REC) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in messages if m.topic == topic]


def statuses(messages: list[Received]) -> list[dict[str, str]]:
    return [json.loads(m.payload) for m in messages if m.topic == STATUS]


async def produce(pub: MqttPublisher, start: int, count: int, rate_hz: float = 20.0) -> int:
    for seq in range(start, start + count):
        pub.publish(rec(seq))
        await asyncio.sleep(1 / rate_hz)
    return start + count


async def _until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_shipped_config_saves_sessions_promptly() -> None:
    conf = Path(__file__).resolve().parents[1] / "configs" / "mosquitto.conf"
    lines = {line.strip() for line in conf.read_text().splitlines()}
    assert {"autosave_interval 1", "persistence true", "allow_anonymous false"} <= lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_broker_restart_mid_stream_loses_nothing(
    mosquitto: Mosquitto, sig: signal.Signals, mqtt_subscriber: type[Subscriber]
) -> None:
    # The subscriber comes back later than the publisher (which flushes its outbox at once): what
    # the broker accepted meanwhile reaches it only through its persisted session.
    async with mqtt_subscriber(mosquitto.settings("monitor"), [REC], reconnect_delay_s=1.0) as sub:
        subscribed_at = time.time()
        pub = make_publisher(mosquitto.settings("service"), backoff_max_s=0.2)
        async with running(pub):
            seq = await produce(pub, 0, 10)
            while not mosquitto.saved_since(subscribed_at):  # autosave_interval 1: within ~2 s
                assert seq < 100, "mosquitto never saved its database"
                seq = await produce(pub, seq, 1)
            mosquitto.stop(sig)
            seq = await produce(pub, seq, 10)  # broker down: the outbox holds them
            assert not pub.is_connected
            mosquitto.start()
            seq = await produce(pub, seq, 15)
            assert await sub.wait_for(lambda m: set(seqs(m)) >= set(range(seq)), 10), (
                sorted(set(range(seq)) - set(seqs(sub.messages))),
                mosquitto.log_tail(),
            )
            stats = pub.stats
        assert stats["reconnects"] >= 1
        assert stats["dropped_overflow"] == stats["dropped_expired"] == 0
        assert sub.connects >= 2


async def test_broker_down_at_start_outbox_bounded_then_delivers(
    mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    sub = mqtt_subscriber(mosquitto.settings("monitor"), [REC])
    await sub.start()
    await sub.stop()  # the persistent session stays: the broker queues for it
    mosquitto.stop(signal.SIGTERM)

    pub = make_publisher(mosquitto.settings("service"), outbox_size=20)
    async with running(pub, connect=False) as task:
        for seq in range(50):
            pub.publish(rec(seq))
            assert pub.stats["outbox"] <= 20
        await asyncio.sleep(0.5)
        stats = pub.stats
        assert not stats["connected"] and not task.done()
        assert stats["outbox"] == 20 and stats["dropped_overflow"] == 30
        assert stats["connect_failures"] >= 2

        mosquitto.start()
        assert await pub.wait_connected(5)
        await sub.start()
        assert await sub.wait_for(lambda m: set(seqs(m)) >= set(range(30, 50)), 5), seqs(sub.messages)
        assert min(seqs(sub.messages)) == 30  # the oldest were dropped, the newest kept
    await sub.stop()


async def test_acl_denied_publish_is_not_delivered(
    mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    async with mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/#"]) as sub:
        rogue = make_publisher(mosquitto.settings("monitor"), will=None, on_connect_messages=None)
        async with running(rogue):
            rogue.publish(OutMessage(REC, json.dumps({"seq": -1}).encode()))
            # The broker drops it. MQTT 5 says why in the PUBACK: 135 Not authorized: permanent.
            assert await _until(lambda: rogue.stats["rejected"] == 1), rogue.stats
            assert await _until(lambda: rogue.failed is not None), rogue.stats
            assert "refused a publish: not authorized" in (rogue.failed or "")
        pub = make_publisher(mosquitto.settings("service"))
        async with running(pub):
            pub.publish(rec(7))
            assert await sub.wait_for(lambda m: 7 in seqs(m))
        assert seqs(sub.messages) == [7]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_bad_password_is_permanent_not_retried_forever(mosquitto: Mosquitto, protocol: str) -> None:
    pub = make_publisher(replace(mosquitto.settings("service", password="wrong"), protocol=protocol))
    with capture_logs() as logs:
        task = asyncio.create_task(pub.run())
        pub.publish(rec(0))
        await asyncio.wait_for(task, 5)  # run() ends by itself: retrying cannot fix a password
    stats = pub.stats
    assert not stats["connected"] and stats["connect_attempts"] == 1
    assert pub.failed is not None and "not authorized" in pub.failed and "ACL" in pub.failed
    refused = [e for e in logs if e["event"] == "mqtt_refused_permanently"]
    assert refused and refused[0]["log_level"] == "error", logs
    assert not any("wrong" in str(e) for e in logs)  # the password is never logged
    pub.publish(rec(1))  # after the refusal: counted, not queued
    assert pub.stats["dropped_closed"] == 1


async def test_last_will_on_abrupt_end_and_explicit_offline_on_close(
    mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    async with mqtt_subscriber(mosquitto.settings("monitor"), [STATUS]) as sub:
        pub = make_publisher(mosquitto.settings("service"))
        task = asyncio.create_task(pub.run())
        assert await pub.wait_connected(5)
        assert await sub.wait_for(lambda m: statuses(m) == [ONLINE])
        task.cancel()  # no close(): the connection is dropped without DISCONNECT
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await sub.wait_for(lambda m: statuses(m)[-1:] == [WILL]), statuses(sub.messages)

        async with mqtt_subscriber(mosquitto.settings("monitor"), [STATUS]) as late:
            assert await late.wait_for(lambda m: statuses(m) == [WILL])
            assert late.messages[0].retain

        pub = make_publisher(mosquitto.settings("service"))
        async with running(pub):
            assert await sub.wait_for(lambda m: statuses(m)[-1:] == [ONLINE])
            await pub.close(final=[status(SHUTDOWN)])
        assert await sub.wait_for(lambda m: statuses(m)[-1:] == [SHUTDOWN])
        await asyncio.sleep(0.3)
        assert statuses(sub.messages)[-1] == SHUTDOWN  # a clean disconnect sends no will


async def test_close_sends_the_final_status_even_when_the_drain_runs_out(
    mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    async with mqtt_subscriber(mosquitto.settings("monitor"), [STATUS]) as sub:
        pub = make_publisher(mosquitto.settings("service"))
        task = asyncio.create_task(pub.run())
        assert await pub.wait_connected(5)
        for seq in range(200):
            pub.publish(rec(seq))
        with capture_logs() as logs:
            await pub.close(final=[status(SHUTDOWN)], drain_timeout_s=0)  # no time for the outbox
        await task
        assert pub.stats["outbox"] == 0 and pub.dropped["shutdown"] == 200  # dropped, counted
        assert any(e["event"] == "mqtt_dropped_at_shutdown" and e["log_level"] == "warning" for e in logs)
        assert await sub.wait_for(lambda m: statuses(m)[-1:] == [SHUTDOWN]), statuses(sub.messages)


async def test_embedded_broker_falls_back_to_311_and_retains(
    embedded_broker: EmbeddedBroker, mqtt_subscriber: type[Subscriber]
) -> None:
    settings = parse_broker_url(embedded_broker.url)
    v311 = aiomqtt.ProtocolVersion.V311
    async with mqtt_subscriber(settings, ["llm-sap/v1/#"], protocol=v311, persistent=False) as sub:
        pub = make_publisher(settings)
        async with running(pub):
            assert pub.stats["protocol"] == "3.1.1"
            pub.publish(rec(1))
            pub.publish(OutMessage(CURRENT, b'{"seq": 2}', retain=True, expires_at=time.time() + 60))
            assert await sub.wait_for(lambda m: seqs(m) == [1] and seqs(m, CURRENT) == [2])
            async with mqtt_subscriber(settings, [CURRENT], protocol=v311, persistent=False) as late:
                assert await late.wait_for(lambda m: seqs(m, CURRENT) == [2])
                assert late.messages[0].retain


async def test_v5_message_expiry_removes_stale_retained(
    mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    pub = make_publisher(mosquitto.settings("service"))
    async with running(pub):
        pub.publish(OutMessage(CURRENT, b'{"seq": 1}', retain=True, expires_at=time.time() + 1))
        async with mqtt_subscriber(mosquitto.settings("monitor"), [CURRENT]) as early:
            assert await early.wait_for(lambda m: seqs(m, CURRENT) == [1])
        await asyncio.sleep(2.0)
        async with mqtt_subscriber(mosquitto.settings("monitor"), [CURRENT, STATUS]) as late:
            assert await late.wait_for(lambda m: statuses(m) == [ONLINE])  # retained, no expiry
            await asyncio.sleep(0.3)
            assert seqs(late.messages, CURRENT) == []


async def test_tls_with_ca_file_and_insecure(mosquitto_tls: Mosquitto) -> None:
    verified = mosquitto_tls.settings("service")  # mqtts:// with the test CA
    assert verified.tls and verified.ca_file
    for settings in (verified, replace(verified, ca_file=None, tls_insecure=True)):
        pub = make_publisher(settings)
        async with running(pub):
            assert pub.stats["protocol"] == "5"
    pub = make_publisher(replace(verified, ca_file=None))  # the system CAs do not know the test CA
    with capture_logs() as logs:
        async with running(pub, connect=False):
            await asyncio.sleep(0.3)
            assert not pub.is_connected and pub.stats["connect_failures"] >= 1
    errors = [e for e in logs if e["event"] == "mqtt_connection_error"]
    assert errors and "certificate verify failed" in errors[0]["detail"], logs
