"""Replay: a recorded video through the live pipeline, as fast as possible, into a report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.config import PlannerConfig
from planner.planner import Planner
from streamer.config import ServiceConfig, StreamConfig
from streamer.exceptions import SourceError, StreamFailedError
from streamer.planning_moments import planning_report, timeline_targets
from streamer.recognizers.timeline import load_timeline
from streamer.replay_report import RecordingSink, compare_clips, live_summary, true_clips
from streamer.service import Service


async def replay(
    cfg: ServiceConfig,
    planner_factory: Callable[[], Planner],
    video: str,
    timeline_spec: str,
    *,
    room: str = "replay",
    recognizer: str | None = None,
    planner_config: PlannerConfig | None = None,
) -> dict[str, Any]:
    """Run the pipeline over ``video`` with the timeline oracle (or ``recognizer``); return the report.

    Raises SourceError when the video cannot be opened or fails part-way (bad input), and
    StreamFailedError when the stream failed otherwise (a stage raised, the broker refused us).
    """
    timeline = load_timeline(timeline_spec)
    stream = StreamConfig(room=room, source=video, recognizer=recognizer or f"timeline:{timeline_spec}")
    cfg = cfg.model_copy(update={"streams": (stream,), "realtime": False})
    recorder = RecordingSink()
    service = Service(
        cfg,
        planner_factory=planner_factory,
        extra_sinks=lambda _room: [recorder],
        planner_config=planner_config,
    )
    t0 = time.perf_counter()
    (state,) = await service.run(exit_when_done=True)
    wall_s = time.perf_counter() - t0
    run = service.runs[0]
    stats = run.pipeline.source.stats
    if state.stream == "failed":  # no report: a report is complete or not written
        if stats.failed:  # the video itself (corrupt, truncated): bad input
            raise SourceError(state.reason or f"video {video}: failed")
        raise StreamFailedError(f"room {room} failed: {state.reason}")
    video_s = state.last_pts_s
    found = state.clips
    recs = recorder.of_type("recommendation")
    latency = run.pipeline.latency.summary()
    return {
        "video": video,
        "timeline": timeline_spec,
        "room": room,
        "session_id": run.pipeline.payloads.session_id,
        "broker": service.broker_url and _mask(service.broker_url),
        "planner": {"engine": run.pipeline.planner.engine.name, "model": run.pipeline.planner.engine.model},
        "recognizer": {
            "name": run.pipeline.recognizer.name,
            "spec": stream.recognizer,
            "checkpoint": getattr(run.pipeline.recognizer, "checkpoint", None),
            "trained_on": getattr(run.pipeline.recognizer, "trained_on", None),
            "rate_hz": run.pipeline.recognizer.rate_hz,
        },
        "segmenter": dict(vars(run.pipeline.segmenter.settings)),
        "frames": {
            "decoded": stats.decoded,
            "delivered": stats.delivered,
            "processed": state.frames_processed,
            "skipped_by_rate": state.frames_skipped,
            "dropped": stats.dropped,
        },
        "clips": {
            "found": found,
            "truth": true_clips(timeline, video_s),
            "comparison": compare_clips(found, true_clips(timeline, video_s)),
        },
        "recommendations": [p for p in recs if not p["refresh"]],
        "refreshed_with_text": sum(1 for p in recs if p["refresh"]),
        "stale_plans_discarded": state.stale_plans,
        "live": live_summary(state, latency, recs, service.captions),
        # the paper's metrics of what was published, the timeline being the truth
        "planning": planning_report(recs, timeline_targets(timeline.rows(), video_s), Path(video).stem),
        "latency_ms": latency,
        "mqtt": run.publisher.stats,
        "wall_s": round(wall_s, 3),
        "video_s": round(video_s, 3),
        "realtime_factor": round(video_s / wall_s, 2) if wall_s > 0 else None,
    }


def _mask(url: str) -> str:
    from streamer.mqtt.url import mask_url

    return mask_url(url)
