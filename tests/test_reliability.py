"""No silent failure: a stage that raises fails its stream loudly (log with traceback, status
``failed`` with the reason on MQTT and the page), and the other rooms go on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from planner.planner import Planner
from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.messages import Outgoing
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource
from tests.streaming_helpers import PROCEDURE, prior_planner, write_timeline

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto, Subscriber

pytestmark = pytest.mark.timeout(60)


class ListSink:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def emit(self, message: Outgoing) -> None:
        self.payloads.append(dict(message.payload))


def crashing_planner() -> Planner:
    planner = prior_planner()

    def recommend(memory: object) -> object:
        raise RuntimeError("boom in the planner stage")

    planner.recommend = recommend  # type: ignore[method-assign,assignment]
    return planner


def _two_rooms(tmp_path: Path, broker: str, sinks: dict[str, ListSink]) -> Service:
    timeline = write_timeline(tmp_path / "timeline.csv")
    cfg = ServiceConfig(
        streams=(
            StreamConfig(room="or-bad", source="synthetic"),
            StreamConfig(room="or-ok", source="synthetic"),
        ),
        recognizer=f"timeline:{timeline}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=broker),
    )
    planners = iter([crashing_planner, prior_planner])

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(PROCEDURE, duration_s=34.0, fps=10.0, size=(32, 32), realtime=True, speed=20.0)

    return Service(
        cfg,
        planner_factory=lambda: next(planners)(),
        source_factory=source,
        extra_sinks=lambda room: [sinks.setdefault(room, ListSink())],
    )


async def test_a_stage_exception_fails_the_stream_loudly_and_the_other_room_goes_on(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    sinks: dict[str, ListSink] = {}
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/+/status"]).start()
    service = _two_rooms(tmp_path, mosquitto.url("service"), sinks)
    try:
        with capture_logs() as logs:
            states = await asyncio.wait_for(service.run(), 40)
        failed = lambda ms: any(b'"failed"' in m.payload and "/or-bad/" in m.topic for m in ms)  # noqa: E731
        assert await sub.wait_for(failed, 5)
    finally:
        await sub.stop()
    bad, ok = states
    assert bad.stream == "failed" and "boom in the planner stage" in (bad.reason or "")
    assert ok.stream == "ended" and ok.recommendations >= len(PROCEDURE)
    assert service.failed_streams == [("or-bad", bad.reason)]
    # the log names the room and carries the traceback
    errors = [e for e in logs if e["event"] == "stream.failed" and e.get("room") == "or-bad"]
    assert errors and errors[0]["log_level"] == "error" and isinstance(errors[0]["exc_info"], RuntimeError)
    # the MQTT subscriber and the page (any sink) both see the failure with its reason
    statuses = [json.loads(m.payload) for m in sub.messages if "/or-bad/" in m.topic]
    assert any(p["stream"] == "failed" and "boom" in p["reason"] for p in statuses)
    assert any(p["type"] == "status" and p["stream"] == "failed" for p in sinks["or-bad"].payloads)


async def test_a_wrong_mqtt_password_fails_the_room_instead_of_retrying_forever(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    sinks: dict[str, ListSink] = {}
    timeline = write_timeline(tmp_path / "timeline.csv")
    cfg = ServiceConfig(
        streams=(StreamConfig(room="or-pw", source="synthetic"),),
        recognizer=f"timeline:{timeline}",
        mqtt=MqttConfig(broker=mosquitto.url("service", password="wrong-password")),
    )

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(PROCEDURE, duration_s=34.0, fps=10.0, size=(32, 32), realtime=True, speed=1.0)

    service = Service(
        cfg,
        planner_factory=prior_planner,
        source_factory=source,
        extra_sinks=lambda room: [sinks.setdefault(room, ListSink())],
    )
    with capture_logs() as logs:
        (state,) = await asyncio.wait_for(service.run(), 15)  # ends: the stream would take 34 s
    assert state.stream == "failed" and "not authorized" in (state.reason or ""), state
    assert service.failed_streams and service.failed_streams[0][0] == "or-pw"
    assert any(e["event"] == "stream.failed" and e["log_level"] == "error" for e in logs)
    assert any(p["stream"] == "failed" for p in sinks["or-pw"].payloads if p["type"] == "status")


async def test_when_one_stage_raises_the_other_stages_stop_too(tmp_path: Path) -> None:
    from streamer.payloads import PayloadFactory
    from streamer.pipeline import PipelineSettings, StreamPipeline
    from streamer.recognizers.timeline import TimelineRecognizer, load_timeline
    from streamer.segmenter import SegmenterSettings

    sink = ListSink()
    pipeline = StreamPipeline(
        room="or-x",
        source=SyntheticSource(PROCEDURE, duration_s=34.0, fps=10.0, size=(32, 32), realtime=True, speed=2.0),
        recognizer=TimelineRecognizer(load_timeline(write_timeline(tmp_path / "t.csv")), rate_hz=5.0),
        planner=crashing_planner(),
        sinks=[sink],
        payloads=PayloadFactory("or-x"),
        segmenter=SegmenterSettings(smoothing_s=0.0, confirm_s=0.5, compensate_lag=False),
        settings=PipelineSettings(refresh_text=False),
    )
    await pipeline.source.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await asyncio.wait_for(pipeline.run(), 10)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        names = [t.get_coro().__qualname__ for t in left]  # type: ignore[union-attr]
        assert not any("StreamPipeline" in n for n in names), names  # no stage left running
        emitted = len(sink.payloads)
        await asyncio.sleep(1.0)  # the source still runs: nothing more comes out of the pipeline
        assert len(sink.payloads) == emitted
    finally:
        await pipeline.source.stop()


def test_a_message_is_encoded_once_and_mqtt_and_the_page_send_the_same_bytes() -> None:
    from datetime import datetime

    from planner.memory import NHFMemory
    from streamer.events import ClipStarted
    from streamer.messages import outgoing
    from streamer.payloads import PayloadFactory, Topics
    from streamer.service import mqtt_message
    from streamer.web.hub import EventHub

    factory, topics = PayloadFactory("or-b"), Topics("or-b")
    planner = prior_planner()
    clip = ClipStarted(0, "Dissection", 0.0, 0.5)
    rec = factory.recommendation(
        planner.recommend(NHFMemory().start_clip("Dissection", 0.0)), clip, stream_time_s=0.5, stamps={}
    )
    message = outgoing(topics.recommendation, rec, retain=False)
    hub = EventHub(["or-b"])
    page = hub.subscribe("or-b")
    page.queue.clear()
    hub.emit(message)
    hub.emit(message.copy_to(topics.current))  # told it is the retained copy: not sent twice
    mqtt = mqtt_message(message)
    assert len(page.queue) == 1
    data = next(line for line in page.queue[0].splitlines() if line.startswith("data: "))[6:]
    assert data.encode() == mqtt.payload == message.body  # the very same bytes
    assert mqtt.payload is message.body  # encoded once, not again for MQTT
    assert mqtt.kind == "recommendation" and mqtt.seq == rec["seq"] and mqtt.message_id == rec["id"]
    iso = datetime.fromisoformat(rec["valid_until"].replace("Z", "+00:00")).timestamp()
    assert message.expires_at is not None and abs(message.expires_at - iso) < 0.001  # numeric inside
    assert mqtt.expires_at == message.expires_at
