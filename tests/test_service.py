"""The whole service against a real mosquitto (and the embedded broker), and its commands."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.payloads import validate_payload
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource
from tests.streaming_helpers import PROCEDURE, prior_planner, write_timeline
from training.cli import main

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto, Subscriber


def _payloads(sub: Subscriber, suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages if m.topic.endswith(suffix)]


def _service(
    tmp_path: Path, broker: str, rows=PROCEDURE, *, speed: float = 1.0, fps: float = 10.0, room="or-1"
):  # type: ignore[no-untyped-def]
    timeline = write_timeline(tmp_path / "timeline.csv", rows)
    duration = rows[-1][0] + 4.0
    cfg = ServiceConfig(
        streams=(StreamConfig(room=room, source="synthetic"),),
        recognizer=f"timeline:{timeline}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=broker),
    )

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(rows, duration_s=duration, fps=fps, size=(32, 32), realtime=True, speed=speed)

    return Service(cfg, planner_factory=prior_planner, source_factory=source)


async def test_subscriber_sees_clips_recommendations_and_status(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/or-1/#"]).start()
    try:
        states = await asyncio.wait_for(_service(tmp_path, mosquitto.url("service"), speed=10.0).run(), 30)
        assert states[0].stream == "ended"
        assert await sub.wait_for(lambda ms: any(b'"offline"' in m.payload for m in ms), 5)
    finally:
        await sub.stop()
    for m in sub.messages:
        validate_payload(json.loads(m.payload))
    recs = [p for p in _payloads(sub, "/recommendation") if not p["refresh"]]
    assert [p["current_action"] for p in recs] == [a for _, a in PROCEDURE]
    started = [p for p in _payloads(sub, "/clip") if p["event"] == "started"]
    assert len(started) == len(PROCEDURE)
    statuses = _payloads(sub, "/status")
    assert statuses[0]["state"] == "online" and statuses[-1]["state"] == "offline"
    assert statuses[-1]["reason"] == "shutdown"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_broker_restart_mid_stream_loses_no_recommendation(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber], sig: signal.Signals
) -> None:
    # 24 clips of 4 s played at 8x: a recommendation every 0.5 s for 12 s
    rows = [(i * 4.0, a) for i, a in enumerate(["Dissection", "Tissue Retraction", "Coagulation"] * 8)]
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/or-1/recommendation"]).start()
    service = _service(tmp_path, mosquitto.url("service"), rows, speed=8.0)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.sleep(4.0)
        mosquitto.stop(sig)
        await asyncio.sleep(1.5)
        mosquitto.start()
        (state,) = await asyncio.wait_for(task, 40)
        n = state.recommendations
        assert await sub.wait_for(lambda ms: len({json.loads(m.payload)["seq"] for m in ms}) >= n, 15)
    finally:
        await sub.stop()
    seqs = [json.loads(m.payload)["seq"] for m in sub.messages]
    ids = {json.loads(m.payload)["id"] for m in sub.messages}
    assert sorted(set(seqs)) == list(range(1, n + 1)), f"gaps: {sorted(set(range(1, n + 1)) - set(seqs))}"
    assert len(ids) == len(set(seqs))  # a duplicate delivery repeats its id: dedupe on it
    assert n >= 40


async def test_broker_down_at_start_then_up(tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber) -> None:  # type: ignore[no-untyped-def]
    mosquitto.stop(signal.SIGTERM)
    service = _service(tmp_path, mosquitto.url("service"), speed=6.0)
    task = asyncio.create_task(service.run())
    await asyncio.sleep(2.0)
    run = service.runs[0]
    assert not run.publisher.is_connected
    assert run.publisher.stats["outbox"] <= 1000  # bounded while the broker is away
    mosquitto.start()
    sub = await mqtt_subscriber(
        mosquitto.settings("monitor"), ["llm-sap/v1/or-1/recommendation/current"]
    ).start()
    try:
        (state,) = await asyncio.wait_for(task, 30)
        assert state.stream == "ended" and run.publisher.stats["connects"] >= 1
        assert await sub.wait_for(lambda ms: len(ms) >= 1, 5)  # the retained current recommendation
    finally:
        await sub.stop()
    latest = json.loads(sub.messages[-1].payload)
    assert latest["current_action"] == PROCEDURE[-1][1]


async def test_unreachable_rtsp_marks_the_stream_failed_and_the_service_stays_up(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    from tests.mqtt_fixtures import free_port

    timeline = write_timeline(tmp_path / "t.csv")
    cfg = ServiceConfig(
        streams=(
            StreamConfig(room="or-cam", source=f"rtsp://127.0.0.1:{free_port()}/live"),
            StreamConfig(room="or-2", source="synthetic"),
        ),
        recognizer=f"timeline:{timeline}",
        mqtt=MqttConfig(broker=mosquitto.url("service")),
    )
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/+/status"]).start()
    stop = asyncio.Event()
    service = Service(cfg, planner_factory=prior_planner)
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    try:
        failed = lambda ms: any(b'"failed"' in m.payload and "or-cam" in m.topic for m in ms)  # noqa: E731
        assert await sub.wait_for(failed, 10)
        await asyncio.sleep(0.5)
        assert not task.done()  # the service stays up, the other room keeps running
        assert service.runs[1].pipeline.state.stream == "running"
        stop.set()
        states = await asyncio.wait_for(task, 10)
    finally:
        await sub.stop()
    assert states[0].stream == "failed" and "connection refused" in (states[0].reason or "")


@pytest.mark.data
def test_replay_a_real_clip_writes_the_report(tmp_path: Path, clips_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = sorted(clips_dir.glob("*.mp4"))[0]
    timeline = write_timeline(
        tmp_path / "t.csv", [(0.0, "Tissue Retraction"), (10.0, "Dissection"), (20.0, "Coagulation")]
    )
    report_path = tmp_path / "report.json"
    assert main(["replay", str(clip), "--timeline", str(timeline), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["frames"]["decoded"] == 800 and report["frames"]["dropped"] == 0
    assert report["clips"]["comparison"]["matched"] == 3 and report["clips"]["comparison"]["extra"] == 0
    assert len(report["recommendations"]) == 3
    assert report["realtime_factor"] > 1.0 and 31 < report["video_s"] < 33
    for stage in ("total", "segmentation_hold", "planned"):
        assert report["latency_ms"][stage]["n"] == 3
    assert "real time" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "argv_tail", "message"),
    [
        (lambda d: d / "missing.mp4", [], "not found"),
        (lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4", [], "invalid data"),
    ],
    ids=["missing", "not-a-video"],
)
def test_replay_bad_video_is_exit_2_and_writes_nothing(tmp_path, capsys, make, argv_tail, message) -> None:  # type: ignore[no-untyped-def]
    video = make(tmp_path)
    timeline = write_timeline(tmp_path / "t.csv")
    report = tmp_path / "out" / "report.json"
    assert main(["replay", str(video), "--timeline", str(timeline), "--report", str(report), *argv_tail]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("llm-sap: error")]
    assert len(err) == 1 and message in err[0]
    assert not report.exists()


@pytest.mark.data
def test_replay_truncated_video_is_exit_2(tmp_path: Path, clips_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = sorted(clips_dir.glob("*.mp4"))[0]
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "replay",
                str(cut),
                "--timeline",
                str(write_timeline(tmp_path / "t.csv")),
                "--report",
                str(report),
            ]
        )
        == 2
    )
    assert "llm-sap: error:" in capsys.readouterr().err
    assert not report.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("start_s,action\n0,Dissection\nabc,Coagulation\n", "line 3: start_s 'abc' is not a number"),
        ("start_s,action\n0,Dissection\n5,Suturing\n", "line 3: 'Suturing' is not an action"),
        ("time,label\n0,Dissection\n", "header must be 'start_s,action'"),
        ("start_s,action\n5,Dissection\n2,Coagulation\n", "line 3: start_s 2 is not after 5"),
    ],
)
def test_malformed_timeline_is_exit_2_naming_the_line(tmp_path, capsys, content, message) -> None:  # type: ignore[no-untyped-def]
    timeline = tmp_path / "t.csv"
    timeline.write_text(content)
    assert (
        main(["serve", "--source", "synthetic", "--recognizer", f"timeline:{timeline}", "--exit-when-done"])
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err


def test_serve_stops_cleanly_on_sigterm_and_publishes_offline(tmp_path: Path, mosquitto: Mosquitto) -> None:
    timeline = write_timeline(tmp_path / "t.csv")
    cmd = [sys.executable, "-m", "training.cli", "serve", "--source", "synthetic", "--room", "or-9",
           "--broker", mosquitto.url("service"), "--recognizer", f"timeline:{timeline}",
           "--log-format", "json"]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:  # wait until it is streaming
            status = _retained(mosquitto, "llm-sap/v1/or-9/status", wait_s=1)
            if status and status["stream"] == "running":
                break
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    retained = _retained(mosquitto, "llm-sap/v1/or-9/status")
    assert retained is not None and retained["state"] == "offline" and retained["reason"] == "shutdown"


def _retained(mosquitto: Mosquitto, topic: str, wait_s: float = 5) -> dict[str, Any] | None:
    """The retained message on ``topic``, read by a fresh subscriber (None if none within wait_s)."""
    import aiomqtt

    async def read() -> dict[str, Any] | None:
        s = mosquitto.settings("monitor")
        async with aiomqtt.Client(s.host, s.port, username=s.username, password=s.password) as client:
            await client.subscribe(topic, qos=1)
            async for message in client.messages:
                return json.loads(bytes(message.payload))  # type: ignore[arg-type]
        return None

    try:
        return asyncio.run(asyncio.wait_for(read(), wait_s))
    except (TimeoutError, OSError):
        return None


def test_demo_runs_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--speed", "40"]) == 0
    out = capsys.readouterr().out
    assert "next ▶" in out and "assistant offline" in out and "recommendations" in out
