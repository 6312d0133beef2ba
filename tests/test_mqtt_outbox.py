"""Pure parts of the MQTT output: broker URLs, the bounded outbox, TLS settings."""

from __future__ import annotations

import ssl

import pytest

from streamer.exceptions import BrokerURLError
from streamer.mqtt.outbox import Outbox, OutMessage
from streamer.mqtt.publisher import MqttPublisher, tls_context
from streamer.mqtt.url import BrokerSettings, mask_url, parse_broker_url


def msg(i: int, expires_at: float | None = None) -> OutMessage:
    return OutMessage(
        "llm-sap/v1/or1/recommendation", str(i).encode(), expires_at=expires_at, message_id=f"m{i}"
    )


# -- URLs -------------------------------------------------------------------------------------


def test_url_defaults_and_credentials() -> None:
    s = parse_broker_url("mqtt://broker.local")
    assert (s.host, s.port, s.tls, s.username, s.password, s.protocol) == (
        "broker.local",
        1883,
        False,
        None,
        None,
        "auto",
    )
    s = parse_broker_url("mqtts://svc%40or:p%40ss%3Aw0rd@10.0.0.5:9883/")
    assert (s.host, s.port, s.tls, s.username, s.password) == ("10.0.0.5", 9883, True, "svc@or", "p@ss:w0rd")
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_broker_url("mqtt://[::1]:1884").host == "::1"


def test_password_never_shown() -> None:
    s = parse_broker_url("mqtt://service:s3cret@h:1883")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s) and "s3cret" not in s.url
    assert s.url == "mqtt://service:***@h:1883"
    assert mask_url("mqtt://u:s3cret@h") == "mqtt://u:***@h"


@pytest.mark.parametrize(
    "url",
    [
        "http://u:s3cret@h",
        "mqtt://u:s3cret@h:99999",
        "mqtt://u:s3cret@h:abc",
        "mqtt://u:s3cret@:1883",
        "mqtt://u:s3cret@h/topic",
        "mqtt://u:s3cret@h?x=1",
        "mqtt://u:s3cret@h:0",
        "broker:1883",
        "",
    ],
)
def test_bad_urls_name_the_url_without_password(url: str) -> None:
    with pytest.raises(BrokerURLError) as err:
        parse_broker_url(url)
    text = str(err.value)
    assert "s3cret" not in text and "\n" not in text
    assert mask_url(url) in text


def test_settings_validate_themselves() -> None:
    with pytest.raises(BrokerURLError, match="protocol"):
        BrokerSettings("h", protocol="4")  # type: ignore[arg-type]
    with pytest.raises(BrokerURLError, match="port"):
        BrokerSettings("h", port=70000)


def test_tls_context() -> None:
    assert tls_context(BrokerSettings("h")) is None
    strict = tls_context(BrokerSettings("h", tls=True))
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = tls_context(BrokerSettings("h", tls=True, tls_insecure=True))
    assert loose is not None and loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_fifo_and_ack_only_after_publish() -> None:
    box = Outbox(3)
    for i in range(3):
        box.put(msg(i))
    head = box.peek()
    assert head is not None and head.message_id == "m0"
    assert box.peek() is head and len(box) == 3  # peeking twice hands out the same message
    assert box.ack(head) and len(box) == 2
    assert not box.ack(head)  # already gone
    nxt = box.peek()
    assert nxt is not None and nxt.message_id == "m1"


def test_outbox_overflow_drops_expired_first_then_oldest() -> None:
    now = 1000.0
    box = Outbox(3)
    box.put(msg(0), now=now)
    box.put(msg(1, expires_at=now + 1), now=now)
    box.put(msg(2), now=now)
    box.put(msg(3), now=now + 5)  # full: the expired m1 goes, not the oldest m0
    assert box.stats["dropped_expired"] == 1 and box.stats["dropped_overflow"] == 0
    box.put(msg(4), now=now + 5)  # full, nothing expired: the oldest m0 goes
    assert box.stats["dropped_overflow"] == 1
    ids = []
    while (m := box.peek(now + 5)) is not None:
        ids.append(m.message_id)
        box.ack(m)
    assert ids == ["m2", "m3", "m4"]
    assert box.stats == {
        "outbox": 0,
        "outbox_max": 3,
        "enqueued": 5,
        "acked": 3,
        "dropped_expired": 1,
        "dropped_overflow": 1,
    }


def test_outbox_peek_skips_expired() -> None:
    box = Outbox(10)
    box.put(msg(0, expires_at=5.0), now=0)
    box.put(msg(1, expires_at=20.0), now=0)
    box.put(msg(2), now=0)
    head = box.peek(now=10.0)
    assert head is not None and head.message_id == "m1"
    assert box.stats["dropped_expired"] == 1 and len(box) == 2


def test_ack_of_a_message_dropped_in_flight_removes_nothing() -> None:
    box = Outbox(1)
    box.put(msg(0), now=0)
    in_flight = box.peek(now=0)
    assert in_flight is not None
    box.put(msg(1), now=0)  # overflow while m0 is being published
    assert not box.ack(in_flight)
    head = box.peek(now=0)
    assert head is not None and head.message_id == "m1"


@pytest.mark.parametrize("bad", [{"topic": ""}, {"topic": "a/+/b"}, {"topic": "a/#"}, {"qos": 3}])
def test_out_message_validates(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"topic": "a/b", "payload": b"x", **bad}
    with pytest.raises(ValueError):
        OutMessage(**fields)  # type: ignore[arg-type]


async def test_publish_never_blocks_and_counts_after_close() -> None:
    pub = MqttPublisher(BrokerSettings("127.0.0.1", port=1), client_id="unit", outbox_size=2)
    for i in range(5):
        pub.publish(msg(i))
    assert pub.stats["outbox"] == 2 and pub.stats["dropped_overflow"] == 3
    await pub.close()
    pub.publish(msg(9))
    assert pub.stats["dropped_closed"] == 1 and not pub.stats["connected"]


def test_overflow_spares_statuses_and_promote_puts_them_first() -> None:
    box = Outbox(3)
    status = OutMessage("t/status", b"s", kind="status", seq=1)
    box.put(status, now=0)
    for i in range(5):
        box.put(OutMessage("t/rec", str(i).encode(), kind="recommendation"), now=0)
    assert box.dropped_overflow == 3 and box.has("status")  # the oldest non-status went instead
    assert box.promote("status") == 1 and box.peek(now=0) is status
    assert [m.payload for m in box.clear()] == [b"s", b"3", b"4"] and len(box) == 0


def test_aiomqtt_private_attributes_the_publisher_relies_on() -> None:
    """The publisher reads aiomqtt's ``_client`` (paho, for the PUBACK reason and an abort without
    DISCONNECT) and ``_disconnected``: pinned here, so an aiomqtt upgrade that moves them fails a test."""
    import asyncio

    import aiomqtt
    import paho.mqtt.client as paho

    async def make() -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", 1)

    client = asyncio.run(make())
    assert isinstance(client._client, paho.Client)
    assert isinstance(client._disconnected, asyncio.Future)
    assert callable(client._client.socket) and callable(client._client.loop_read)
