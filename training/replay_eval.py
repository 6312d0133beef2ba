"""Replay-based planning evaluation: every video of a split through the live pipeline, scored.

Each video of the split is one room of one live service (the segmenter, the NHFM memory with its
keyframes and captions, the planner under its deadline, the payloads, MQTT on an embedded broker),
run as fast as possible, all rooms at once. The video is the user's recording (``--videos DIR``:
``DIR/VID06.mp4``, ...) or, without it, a synthetic video drawn from the annotation's timeline.
The recognizer is the timeline oracle (the paper's setting: history labels are ground truth).

The planning samples of the annotation file are then scored at their clip, with the paper's
metrics, at two moments (``streamer.planning_moments``): the ranking in force when the clip before
the target started, and the last ranking planned before the target started. Beside them,
``offline_same_history`` is the offline evaluation run on the histories the live path had (the
labels the recognizer gave). For a label-only planner with the timeline oracle the three are
identical; any difference in other settings is the live path's doing, and ``diagnostics`` says
where it comes from (history labels, segmentation, missed rankings, fallbacks, refreshes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from planner.config import PlannerConfig
from planner.memory import NHFMemory
from planner.metrics import Scored, compute_metrics
from planner.planner import Planner
from streamer.config import ServiceConfig, StreamConfig
from streamer.latency import percentiles
from streamer.messages import Outgoing
from streamer.planning_moments import MOMENTS, TargetRankings, clip_starts, rankings, rankings_before
from streamer.replay_report import RecordingSink
from streamer.sources.base import FrameSource
from training.cholect50 import Annotations, PlanningSample
from training.evaluate import actions_history
from training.exceptions import TrainingError

log = structlog.get_logger(__name__)

#: Synthetic videos: one frame per second (CholecT50's annotation rate), and this long after the
#: last clip's start (the shortest clip in the data lasts 10 s).
SYNTHETIC_FPS = 1.0
SYNTHETIC_TAIL_S = 10.0
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


class ReplayEvalError(TrainingError, ValueError):
    """Input replay-eval cannot use: a missing videos folder or video, a video shorter than its timeline."""


@dataclass(frozen=True)
class VideoJob:
    video: str  # VIDxx
    rows: tuple[tuple[float, str], ...]  # the annotation's timeline: (start second, Action)
    path: Path | None  # the user's recording, or None for a synthetic video
    duration_s: float


def split_videos(data: Annotations, split: str) -> tuple[str, ...]:
    if split == "test":
        return data.test_videos
    if split == "train":
        return data.train_videos
    if split == "all":
        return tuple(data.videos)
    raise ReplayEvalError(f"split must be 'test', 'train' or 'all', got {split!r}")


def plan_jobs(data: Annotations, split: str, videos_dir: Path | None) -> list[VideoJob]:
    """One job per video of the split; every input is checked here, before anything runs."""
    if videos_dir is not None and not videos_dir.is_dir():
        raise ReplayEvalError(f"videos folder {videos_dir} not found")
    jobs = []
    for video in split_videos(data, split):
        rows = tuple((float(c.start_s), c.action) for c in data.videos[video])
        last_start = rows[-1][0]
        if videos_dir is None:
            jobs.append(VideoJob(video, rows, None, last_start + SYNTHETIC_TAIL_S))
            continue
        path = _find_video(videos_dir, video)
        duration = _duration(path)
        if duration <= last_start:
            raise ReplayEvalError(
                f"{path}: {duration:.1f} s long, shorter than its timeline (the last clip starts at "
                f"{last_start:g} s)"
            )
        jobs.append(VideoJob(video, rows, path, duration))
    if not jobs:
        raise ReplayEvalError(f"split {split!r} has no videos in the annotations")
    return jobs


def _find_video(folder: Path, video: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        path = folder / f"{video}{suffix}"
        if path.is_file():
            return path
    raise ReplayEvalError(f"video {video} not found in {folder} (expected {folder / (video + '.mp4')})")


def _duration(path: Path) -> float:
    from streamer.exceptions import SourceError
    from streamer.sources.video import probe

    try:
        return probe(str(path)).duration_s
    except SourceError as exc:
        raise ReplayEvalError(str(exc)) from None


# ---- the live run --------------------------------------------------------------------------------
@dataclass
class LiveRun:
    """What one video's room published, and its pipeline's figures."""

    video: str
    payloads: list[dict[str, Any]]
    state: Any  # streamer.pipeline.StreamState
    latency: dict[str, list[float]]
    decoded: int
    dropped: int
    clip_starts: list[float]  # the start second of each clip the live path found, by index


async def run_live(
    jobs: Sequence[VideoJob],
    service_cfg: ServiceConfig,
    planner_cfg: PlannerConfig,
    planner_factory: Callable[[], Planner],
    annotations: Path,
    *,
    on_video_done: Callable[[str], None] | None = None,
) -> list[LiveRun]:
    """Every job as one room of one service, all at once (lossless: nothing dropped)."""
    from streamer.service import Service
    from streamer.sources.synthetic import SyntheticSource

    by_room = {job.video: job for job in jobs}
    streams = tuple(
        StreamConfig(
            room=job.video,
            source=str(job.path) if job.path else "synthetic",
            recognizer=f"timeline:{annotations}#{job.video}",
        )
        for job in jobs
    )
    cfg = service_cfg.model_copy(update={"streams": streams, "realtime": False})
    recorders = {job.video: _ProgressSink(job.video, on_video_done) for job in jobs}

    def source(stream: StreamConfig, c: ServiceConfig) -> FrameSource:
        job = by_room[stream.room]
        if job.path is not None:
            from streamer.service import default_source

            return default_source(stream, c)
        size = (c.frame_size, c.frame_size)
        # stream time = the annotation's time: the video starts at its first annotated clip
        return SyntheticSource(list(job.rows), duration_s=job.duration_s, fps=SYNTHETIC_FPS, size=size,
                               name=job.video, start_s=job.rows[0][0])  # fmt: skip

    service = Service(
        cfg,
        planner_factory=planner_factory,
        source_factory=source,
        extra_sinks=lambda room: [recorders[room]],
        planner_config=planner_cfg,
    )
    await service.run(exit_when_done=True)
    failed = service.failed_streams
    if failed:
        room, reason = failed[0]
        raise ReplayEvalError(f"video {room} failed in the live pipeline: {reason}")
    out = []
    for run in service.runs:
        pipeline = run.pipeline
        names = ("total", "plan_rank", "refresh", "caption", "text", "frame")
        out.append(
            LiveRun(
                video=run.config.room,
                payloads=recorders[run.config.room].of_type("recommendation"),
                state=pipeline.state,
                latency={n: pipeline.latency.values(n) for n in names},
                decoded=pipeline.source.stats.decoded,
                dropped=pipeline.source.stats.dropped,
                clip_starts=clip_starts(recorders[run.config.room].of_type("clip")),
            )
        )
    return out


class _ProgressSink(RecordingSink):
    """Records a room's payloads and says when its stream ended."""

    def __init__(self, video: str, on_done: Callable[[str], None] | None) -> None:
        super().__init__()
        self.video = video
        self.on_done = on_done

    def emit(self, message: Outgoing) -> None:
        super().emit(message)
        payload = message.payload
        if message.kind == "status" and payload.get("stream") in ("ended", "failed") and self.on_done:
            self.on_done(self.video)
            self.on_done = None


# ---- scoring -------------------------------------------------------------------------------------
def clip_start_s(data: Annotations, sample: PlanningSample) -> float:
    clips = data.videos[sample.video]
    return float(next(c.start_s for c in clips if str(c.index) == sample.clip))


def memory_from_history(
    history: Sequence[str], planner_cfg: PlannerConfig, starts: Sequence[float] = ()
) -> NHFMemory:
    """A label-only memory for a_1..a_t (with each clip's start second when given: the learned
    planner reads clip times), with the configured bounds."""
    m = planner_cfg.memory
    return NHFMemory.from_history(
        tuple(history[:-1]),
        history[-1] if history else None,
        max_distant=m.max_distant,
        max_keyframes=m.max_keyframes,
        starts=tuple(starts[: len(history)]) if len(starts) >= len(history) else (),
    )


def score(
    data: Annotations,
    samples: Sequence[PlanningSample],
    runs: Sequence[LiveRun],
    planner: Planner,
    planner_cfg: PlannerConfig,
) -> dict[str, Any]:
    """The three metric blocks, and where live and offline differ."""
    by_video = {r.video: rankings(r.payloads) for r in runs}
    starts_by_video = {r.video: r.clip_starts for r in runs}  # the live path's clip times
    moments: dict[str, list[Scored]] = {m: [] for m in MOMENTS}
    offline: list[Scored] = []
    found: list[tuple[PlanningSample, TargetRankings]] = []
    diag = {
        "missed": 0,
        "history_differs_from_actions": 0,
        "degraded": 0,
        "refreshed_before_next": 0,
        "top1_changed_by_refresh": 0,
        "top1_differs_from_offline": 0,
    }
    for sample in samples:
        at = rankings_before(by_video.get(sample.video, []), clip_start_s(data, sample))
        found.append((sample, at))
        for m in MOMENTS:
            moments[m].append(Scored(sample.video, sample.target, sample.next_action, at.ranked(m)))
        if at.clip_start is None:
            diag["missed"] += 1
            offline.append(Scored(sample.video, sample.target, sample.next_action, ()))
            continue
        memory = memory_from_history(at.history, planner_cfg, starts_by_video.get(sample.video, ()))
        ranked_offline = planner.recommend(memory).ranked_labels
        offline.append(Scored(sample.video, sample.target, sample.next_action, ranked_offline))
        diag["history_differs_from_actions"] += at.history != actions_history(data, sample)
        diag["degraded"] += bool(at.clip_start.get("degraded") or (at.before_next or {}).get("degraded"))
        diag["refreshed_before_next"] += at.refreshes > 0
        diag["top1_changed_by_refresh"] += at.ranked("clip_start")[:1] != at.ranked("before_next")[:1]
        diag["top1_differs_from_offline"] += at.ranked("clip_start")[:1] != tuple(ranked_offline[:1])
    first = compute_metrics(moments["clip_start"])
    return {
        "samples": first.samples,
        "relaxed_samples": first.relaxed_samples,
        "videos": first.videos,
        "moments": {m: compute_metrics(moments[m]).metrics for m in MOMENTS},
        "offline_same_history": compute_metrics(offline).metrics,
        "diagnostics": diag,
    }


def live_figures(runs: Sequence[LiveRun]) -> dict[str, Any]:
    """Latency percentiles over every room, and what the live NHFM did."""
    latency = {
        name: percentiles(v for r in runs for v in r.latency.get(name, ()))
        for name in ("total", "plan_rank", "refresh", "caption", "text", "frame")
    }
    keyframes = [int(p["basis"]["keyframes"]) for r in runs for p in rankings(r.payloads) if p.get("basis")]
    return {
        "latency_ms": latency,
        "live": {
            "rankings": sum(r.state.rankings for r in runs),
            "refreshes": sum(r.state.refreshes for r in runs),
            "captions": sum(r.state.captions for r in runs),
            "texts": sum(r.state.texts for r in runs),
            "late_texts": sum(r.state.late_texts for r in runs),
            "keyframes_per_recommendation": round(sum(keyframes) / len(keyframes), 2) if keyframes else 0.0,
            "frames_decoded": sum(r.decoded for r in runs),
            "frames_dropped": sum(r.dropped for r in runs),
        },
    }


def replay_eval(
    data: Annotations,
    annotations: Path,
    split: str,
    videos_dir: Path | None,
    service_cfg: ServiceConfig,
    planner_cfg: PlannerConfig,
    planner_factory: Callable[[], Planner],
    *,
    on_video_done: Callable[[str], None] | None = None,
    jobs: Sequence[VideoJob] | None = None,
) -> dict[str, Any]:
    """Run the split through the live pipeline and score it (see the module doc)."""
    jobs = list(jobs) if jobs is not None else plan_jobs(data, split, videos_dir)
    videos = {job.video for job in jobs}
    samples = [s for s in data.split(split) if s.video in videos]
    t0 = time.perf_counter()
    runs = asyncio.run(
        run_live(jobs, service_cfg, planner_cfg, planner_factory, annotations, on_video_done=on_video_done)
    )
    live_s = time.perf_counter() - t0
    planner = planner_factory()
    try:
        report = score(data, samples, runs, planner, planner_cfg)
    finally:
        planner.close()
    wall_s = time.perf_counter() - t0
    log.info("replay_eval.done", videos=len(jobs), samples=report["samples"], wall_s=round(wall_s, 2))
    return {
        **report,
        "split": split,
        "source": f"videos in {videos_dir}" if videos_dir else f"synthetic videos at {SYNTHETIC_FPS:g} fps",
        **live_figures(runs),
        "stream_s": round(sum(job.duration_s - (0 if job.path else job.rows[0][0]) for job in jobs), 1),
        "live_wall_s": round(live_s, 2),
        "wall_s": round(wall_s, 2),
    }
