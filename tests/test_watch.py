"""Watching what the assistant publishes: the embedded broker's port, the commands printed at start,
``llm-sap watch`` on a real TLS broker with credentials, and serve's info lines."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.mqtt.broker import EmbeddedBroker
from streamer.mqtt.url import parse_broker_url, watch_commands
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource
from tests.streaming_helpers import PROCEDURE, prior_planner, write_timeline
from training.cli import main

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto


def test_watch_commands_for_plain_password_and_tls_brokers() -> None:
    sub, watch = watch_commands(parse_broker_url("mqtt://127.0.0.1:1883"), "or-1")
    assert sub == "mosquitto_sub -h 127.0.0.1 -p 1883 -t 'llm-sap/v1/or-1/#' -v"
    assert watch == "llm-sap watch --broker mqtt://127.0.0.1:1883 --room or-1"
    settings = parse_broker_url("mqtts://ops:s3cret@broker.or.local:8883")
    sub, watch = watch_commands(settings, "theatre 2")
    assert "s3cret" not in sub + watch
    assert sub.endswith('-u ops -P "$MQTT_PASSWORD" --capath /etc/ssl/certs')
    assert "-t 'llm-sap/v1/theatre 2/#'" in sub
    assert watch == "llm-sap watch --broker mqtts://ops@broker.or.local:8883 --room 'theatre 2'"


async def test_the_embedded_broker_takes_a_free_port_when_its_own_is_taken() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with capture_logs() as logs:
            broker = EmbeddedBroker(port=taken, fallback=True)
            url = await broker.start()
            await broker.stop()
    assert broker.port != taken and url.endswith(f":{broker.port}")
    started = [e for e in logs if e["event"] == "mqtt_embedded_broker_started"]
    assert len(started) == 1  # one line says which port and why
    assert started[0]["log_level"] == "warning"
    assert started[0]["wanted"] == taken and started[0]["port"] == broker.port
    assert f"port {taken} is in use" in started[0]["reason"]


async def test_the_embedded_broker_uses_its_port_when_free() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with capture_logs() as logs:
        async with EmbeddedBroker(port=free, fallback=True) as broker:
            assert broker.port == free
    assert [e["log_level"] for e in logs if e["event"] == "mqtt_embedded_broker_started"] == ["info"]


def _watch_in_thread(argv: list[str], result: dict[str, Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: result.setdefault("code", main(argv)), daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(90)
async def test_llm_sap_watch_follows_a_room_on_a_tls_broker_and_serve_logs_each_clip_and_plan(
    tmp_path: Path,
    mosquitto_tls: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.mqtt_fixtures import USERS

    port = mosquitto_tls.port
    ca = str(mosquitto_tls.ca_file)
    monkeypatch.setenv("MQTT_PASSWORD", USERS["monitor"])
    result: dict[str, Any] = {}
    argv = ["watch", "--broker", f"mqtts://monitor@127.0.0.1:{port}", "--room", "or-w", "--ca-file", ca,
            "--exit-when-offline"]  # fmt: skip
    watcher = _watch_in_thread(argv, result)
    await asyncio.sleep(2.0)  # connected and subscribed (clip events are not retained)

    rows = PROCEDURE[:3]
    cfg = ServiceConfig(
        streams=(StreamConfig(room="or-w", source="synthetic"),),
        recognizer=f"timeline:{write_timeline(tmp_path / 't.csv', rows)}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=mosquitto_tls.url("service"), ca_file=ca),
    )

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(rows, duration_s=16.0, fps=10.0, size=(32, 32), realtime=True, speed=8.0)

    with capture_logs() as logs:
        service = Service(cfg, planner_factory=prior_planner, source_factory=source)
        await asyncio.wait_for(service.run(), 30)
    await asyncio.to_thread(watcher.join, 20)
    assert result.get("code") == 0, result
    out = capsys.readouterr().out
    needles = ("clip #0 started Tissue Retraction", "clip #1 started Dissection", "next ▶", "offline")
    for needle in needles:
        assert needle in out, out

    # serve: the commands to watch the room, then one info line per clip event and per plan
    (watch_line,) = [e for e in logs if e["event"] == "service.watch"]
    expected = f"mosquitto_sub -h 127.0.0.1 -p {port} -t 'llm-sap/v1/or-w/#'"
    assert watch_line["mosquitto_sub"].startswith(expected)
    assert '-u service -P "$MQTT_PASSWORD" --cafile' in watch_line["mosquitto_sub"]
    assert USERS["service"] not in str(watch_line)
    clips = [e for e in logs if e["event"] == "stream.clip"]
    assert (clips[0]["what"], clips[0]["clip"], clips[0]["action"]) == ("started", 1, "Tissue Retraction")
    assert {e["room"] for e in clips} == {"or-w"} and len(clips) >= 5  # 3 starts, 2+ ends
    plans = [e for e in logs if e["event"] == "stream.recommendation" and e["kind"] == "clip_start"]
    assert len(plans) == 3
    first = plans[0]
    assert first["clip"] == 1 and first["current"] == "Tissue Retraction" and len(first["top3"]) == 3
    assert first["latency_ms"] is not None and first["latency_ms"] >= 0


def test_watch_with_a_wrong_password_fails_with_one_line(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    url = mosquitto.url("monitor", "wrong-password")
    code = main(["watch", "--broker", url, "--room", "or-1"])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llm-sap: error: broker mqtt://monitor:***@127.0.0.1"), err
    assert "wrong-password" not in err


def test_watch_refuses_tls_files_without_mqtts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["watch", "--broker", "mqtt://127.0.0.1:1", "--ca-file", "/etc/hostname"]) == 2
    assert "need an mqtts:// broker" in capsys.readouterr().err
