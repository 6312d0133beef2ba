"""The live NHFM with a tiny Qwen2-VL, on real laparoscopic video: keyframes, captions, refreshes.

    python -m training.benchmarks.live_nhfm [--json OUT] [--skip-realtime]

Planners: the prior (labels only), a tiny random Qwen2-VL built here as the DirNHFM planner
(``variant = "direct"``: it sees the keyframes), and the same model as IndirNHFM planner with
itself as captioner (``engine_settings.captioner``). Videos: one real clip (32 s, a timeline with
three clips) and a multi-clip video (the three real clips twice over, 192 s, six clips, each clip's
own action). Each is replayed as fast as possible (``replay``: lossless); the clip is also played
in real time (25 fps pacing, the newest frame wins) to count dropped frames. Per run: rankings at
clip start and refreshes, keyframes per recommendation, captions and their latency (p50/p99),
plan latency (rank, p50/p99), capture → publish latency, frames decoded / dropped, texts late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from planner.config import PlannerConfig
from planner.engines.base import EngineSettings
from planner.factory import SharedPlanning, load_prior
from planner.logs import configure_logging
from streamer.config import ServiceConfig, StreamConfig

DATA_DIR = Path(os.environ.get("LLM_SAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CLIPS = DATA_DIR / "laparoscopic-clips"
ORDER = [
    ("VID43_303_grasper-retract-omentum.mp4", "Tissue Retraction"),
    ("VID05_1858_bipolar-coagulate-abdominal-wall.mp4", "Coagulation"),
    ("VID26_694_hook-dissect-cystic-artery.mp4", "Dissection"),
]


def concat_clips(out: Path, times: int = 2) -> list[tuple[float, str]]:
    """The three real clips ``times`` times over, remuxed (no re-encode) into ``out``; its timeline."""
    import av

    files = [CLIPS / name for name, _ in ORDER] * times
    rows: list[tuple[float, str]] = []
    with av.open(str(files[0])) as first, av.open(str(out), "w") as dst:
        stream = dst.add_stream_from_template(first.streams.video[0])
        offset = 0
        for path, (_, action) in zip(files, ORDER * times, strict=True):
            with av.open(str(path)) as src:
                video = src.streams.video[0]
                rows.append((float(offset * video.time_base), action))
                last = offset
                for packet in src.demux(video):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    last = max(last, packet.pts + (packet.duration or 0))
                    packet.stream = stream
                    dst.mux(packet)
                offset = last
    return rows


def write_timeline(path: Path, rows: list[tuple[float, str]]) -> Path:
    path.write_text("start_s,action\n" + "".join(f"{s:g},{a}\n" for s, a in rows))
    return path


def planner_configs(vl: Path) -> dict[str, PlannerConfig]:
    return {
        "prior": PlannerConfig(),
        "DirNHFM tiny Qwen2-VL": PlannerConfig(
            engine=f"transformers:{vl}", engine_settings=EngineSettings(variant="direct", threads=1)
        ),
        "IndirNHFM tiny Qwen2-VL + captioner": PlannerConfig(
            engine=f"transformers:{vl}",
            engine_settings=EngineSettings(variant="indirect", captioner=str(vl), threads=1),
        ),
    }


def replay_run(cfg: PlannerConfig, video: Path, timeline: Path) -> dict[str, Any]:
    from streamer.replay import replay

    with SharedPlanning(cfg, load_prior(cfg)) as planning:
        report = asyncio.run(
            replay(ServiceConfig(), planning.planner, str(video), str(timeline), planner_config=cfg)
        )
    return summarise(
        report["live"], report["latency_ms"], report["frames"], report["wall_s"], report["video_s"]
    )


def realtime_run(cfg: PlannerConfig, video: Path, timeline: Path) -> dict[str, Any]:
    """The clip paced at 25 fps like a camera: the newest frame wins, dropped frames counted."""
    from streamer.replay_report import RecordingSink, live_summary
    from streamer.service import Service

    stream = StreamConfig(room="live", source=str(video), recognizer=f"timeline:{timeline}")
    service_cfg = ServiceConfig(streams=(stream,), realtime=True)
    recorder = RecordingSink()
    with SharedPlanning(cfg, load_prior(cfg)) as planning:
        service = Service(
            service_cfg,
            planner_factory=planning.planner,
            extra_sinks=lambda _r: [recorder],
            planner_config=cfg,
        )
        t0 = time.perf_counter()
        (state,) = asyncio.run(service.run(exit_when_done=True))
        wall = time.perf_counter() - t0
    pipeline = service.runs[0].pipeline
    latency = pipeline.latency.summary()
    stats = pipeline.source.stats
    live = live_summary(state, latency, recorder.of_type("recommendation"), service.captions)
    frames = {"decoded": stats.decoded, "processed": state.frames_processed, "dropped": stats.dropped}
    return summarise(live, latency, frames, wall, state.last_pts_s)


def summarise(
    live: dict[str, Any], latency: dict[str, Any], frames: dict[str, Any], wall: float, video_s: float
) -> dict[str, Any]:
    kf = live["keyframes_per_recommendation"]
    return {
        "rankings": live["rankings"],
        "refreshes": live["refreshes"],
        "keyframes_per_recommendation": {k: kf[k].get("mean") for k in ("all", "clip_start", "refresh")},
        "captions": live["captions"]["received"],
        "caption_latency_ms": _p(latency.get("caption")),
        "plan_rank_ms": _p(latency.get("plan_rank")),
        "capture_to_publish_ms": _p(latency.get("total")),
        "texts": live["texts"],
        "frames": frames,
        "video_s": round(video_s, 1),
        "wall_s": round(wall, 2),
    }


def _p(s: dict[str, Any] | None) -> dict[str, Any]:
    if not s or not s.get("n"):
        return {"n": 0}
    return {"n": s["n"], "p50": s["p50"], "p99": s["p99"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, dest="json_out")
    parser.add_argument("--skip-realtime", action="store_true", help="replays only")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    if not CLIPS.is_dir():
        raise SystemExit(f"bench: no clips in {CLIPS} (set LLM_SAP_DATA)")
    from training.tiny_models import build_tiny_model

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="live-nhfm-") as tmp:
        root = Path(tmp)
        vl = build_tiny_model(root / "vl", vl=True)
        clip = CLIPS / ORDER[0][0]
        clip_tl = write_timeline(
            root / "clip.csv", [(0.0, "Tissue Retraction"), (11.0, "Dissection"), (22.0, "Coagulation")]
        )
        multi = root / "multi.mp4"
        multi_tl = write_timeline(root / "multi.csv", concat_clips(multi))
        runs = [("replay: real clip (32 s, 3 clips)", clip, clip_tl, replay_run),
                ("replay: multi-clip video (192 s, 6 clips)", multi, multi_tl, replay_run)]  # fmt: skip
        if not args.skip_realtime:
            runs.append(("realtime: real clip (25 fps)", clip, clip_tl, realtime_run))
        for what, video, timeline, fn in runs:
            for name, cfg in planner_configs(vl).items():
                row = {"run": what, "planner": name, **fn(cfg, video, timeline)}
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
