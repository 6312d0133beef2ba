"""The pipeline without a broker: synthetic video, the timeline oracle, payloads recorded in memory."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from planner.planner import Planner
from streamer.payloads import PayloadFactory, validate_payload
from streamer.pipeline import PipelineSettings, StreamPipeline
from streamer.recognizers.timeline import TimelineRecognizer, load_timeline
from streamer.replay_report import RecordingSink
from streamer.segmenter import SegmenterSettings
from streamer.sources.synthetic import SyntheticSource
from tests.streaming_helpers import PROCEDURE, prior_planner, slow_planner, write_timeline

ORACLE = SegmenterSettings(smoothing_s=0.0, confirm_s=0.5, compensate_lag=False)


def _pipeline(
    tmp_path: Path,
    planner: Planner,
    *,
    rows: list[tuple[float, str]] = PROCEDURE,
    duration_s: float = 36.0,
    fps: float = 10.0,
    realtime: bool = False,
    speed: float = 1.0,
    segmenter: SegmenterSettings = ORACLE,
    room: str = "or-test",
    rate_hz: float = 4.0,
) -> tuple[StreamPipeline, RecordingSink]:
    timeline = load_timeline(write_timeline(tmp_path / f"{room}.csv", rows))
    sink = RecordingSink()
    pipeline = StreamPipeline(
        room=room,
        source=SyntheticSource(
            rows, duration_s=duration_s, fps=fps, size=(32, 32), realtime=realtime, speed=speed
        ),
        recognizer=TimelineRecognizer(timeline, rate_hz=rate_hz),
        planner=planner,
        sinks=[sink],
        payloads=PayloadFactory(room),
        segmenter=segmenter,
        settings=PipelineSettings(refresh_text=True),
    )
    return pipeline, sink


async def _run(pipeline: StreamPipeline) -> None:
    await pipeline.source.start()
    await pipeline.run()


async def test_clips_and_recommendations_follow_the_procedure(tmp_path: Path) -> None:
    pipeline, sink = _pipeline(tmp_path, prior_planner())
    await _run(pipeline)

    clips = sink.of_type("clip")
    started = [p["clip"] for p in clips if p["event"] == "started"]
    assert [c["action"] for c in started] == [a for _, a in PROCEDURE]
    for clip, (start, _) in zip(started, PROCEDURE, strict=True):
        assert abs(clip["start_s"] - start) <= 0.26  # one recognizer period at 4 Hz
    assert [p["seq"] for p in clips] == list(range(1, len(clips) + 1))  # no gaps, per type

    recs = [p for p in sink.of_type("recommendation") if not p["refresh"]]
    assert len(recs) == len(PROCEDURE)
    for rec, (_, action) in zip(recs, PROCEDURE, strict=True):
        assert rec["current_action"] == action
        assert rec["ranked"][0]["action"] != action and rec["ranked"][-1]["action"] == action
        assert {"decoded", "recognized", "segmented", "planned", "published"} <= set(rec["stamps"])
        assert rec["latency_ms"]["total"] >= 0
        validate_payload(rec)
    assert recs[2]["history"] == ["Tissue Retraction", "Dissection", "Vessel Clipping"]
    refreshed = [p for p in sink.of_type("recommendation") if p["refresh"]]
    assert refreshed and all(p["response"]["next_actions"] for p in refreshed)
    every_rec = sink.of_type("recommendation")
    assert [p["seq"] for p in every_rec] == list(range(1, len(every_rec) + 1))

    statuses = sink.of_type("status")
    assert statuses[-1]["stream"] == "ended" and statuses[-1]["state"] == "online"
    assert pipeline.source.stats.dropped == 0 and pipeline.state.frames_processed > 100


async def test_slow_planner_never_stalls_video_and_stale_plans_are_dropped(tmp_path: Path) -> None:
    # clips every 0.6 s of stream time, a planner that needs 1 s per clip, a live (realtime) feed
    rows = [(i * 0.6, a) for i, a in enumerate(["Dissection", "Coagulation"] * 5)]
    fast_cuts = SegmenterSettings(smoothing_s=0.0, confirm_s=0.1, min_clip_s=0.2, compensate_lag=False)
    planner = slow_planner(delay_s=1.0)
    pipeline, sink = _pipeline(
        tmp_path, planner, rows=rows, duration_s=6.0, fps=25.0, realtime=True, segmenter=fast_cuts, rate_hz=20
    )
    try:
        await asyncio.wait_for(_run(pipeline), 20)
    finally:
        planner.close()
    started = [p for p in sink.of_type("clip") if p["event"] == "started"]
    recs = [p for p in sink.of_type("recommendation") if not p["refresh"]]
    assert len(started) == len(rows)  # every clip was still found on time
    assert pipeline.state.stale_plans >= 2  # plans overtaken by a newer clip were not published
    assert 1 <= len(recs) < len(rows)
    assert recs[-1]["current_action"] == rows[-1][1]  # the latest clip did get its recommendation
    # the recognizer kept pace: the ingest loop was never blocked by planning
    assert pipeline.state.frames_processed >= 0.9 * 6.0 * 20


async def test_engine_past_its_deadline_gives_a_degraded_recommendation(tmp_path: Path) -> None:
    planner = slow_planner(delay_s=2.0, deadline_s=0.05)
    pipeline, sink = _pipeline(tmp_path, planner, rows=PROCEDURE[:2], duration_s=10.0)
    try:
        await asyncio.wait_for(_run(pipeline), 20)
    finally:
        planner.close()
    recs = [p for p in sink.of_type("recommendation") if not p["refresh"]]
    assert recs and all(p["degraded"] for p in recs)
    assert "deadline" in recs[0]["degraded_reason"] and recs[0]["engine"] == "prior"


async def test_one_slow_stream_does_not_delay_another(tmp_path: Path) -> None:
    slow = slow_planner(delay_s=1.5)
    fast_pipeline, fast_sink = _pipeline(tmp_path, prior_planner(), room="or-fast", realtime=True, speed=6.0)
    slow_pipeline, _ = _pipeline(tmp_path, slow, room="or-slow", realtime=True, speed=6.0)
    main_thread = threading.get_ident()
    try:
        await asyncio.wait_for(asyncio.gather(_run(fast_pipeline), _run(slow_pipeline)), 30)
    finally:
        slow.close()
    assert threading.get_ident() == main_thread
    recs = [p for p in fast_sink.of_type("recommendation") if not p["refresh"]]
    assert len(recs) == len(PROCEDURE)
    # capture → publish for the fast room stays far below the slow room's 1.5 s per plan
    assert max(p["latency_ms"]["total"] for p in recs) < 500
    assert slow_pipeline.state.recommendations >= 1
