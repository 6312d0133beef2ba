"""``llm-sap replay``: a recorded video through the live pipeline, as fast as possible."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table

from planner.atomic import atomic_write_json
from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.factory import SharedPlanning, load_prior
from planner.metrics import METRIC_NAMES, TOP_K
from planner.outputs import check_outputs
from streamer.config import LiveConfig
from streamer.exceptions import SourceError, StreamerError
from streamer.payloads import validate_room
from streamer.replay import replay
from streamer.sources import local_file
from streamer.sources.video import check_video_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (or rtsp:// URL)")
    p.add_argument("--timeline", required=True, help="CSV start_s,action or total_video_info.json#VIDxx")
    p.add_argument("--broker", help="mqtt://... (default: embedded broker)")
    p.add_argument("--room", default="replay", help="room id for the MQTT topics (default replay)")
    p.add_argument("--recognizer", help="checkpoint:FILE or plugin:MODULE:CLASS instead of the timeline "
                   "oracle (default: the oracle, timeline:TIMELINE)")  # fmt: skip
    p.add_argument("--force-recognizer", action="store_true", default=None,
                   help="use a checkpoint trained on synthetic frames on this real video anyway")  # fmt: skip
    add_planner_arguments(p)
    p.add_argument("--report", type=Path, help="write the report as JSON")


def overrides(args: argparse.Namespace) -> list[str]:
    keys = {**PLANNER_FLAGS, "broker": "service.mqtt.broker", "force_recognizer": "service.force_recognizer"}
    return flag_overrides(args, keys)


def run(cfg: LiveConfig, args: argparse.Namespace, console: Console) -> int:
    path = local_file(args.video)
    if path is not None and not path.is_file():
        raise SourceError(f"video {path} not found")
    if path is not None:
        check_video_file(str(path))
    try:
        validate_room(args.room)
    except ValueError as exc:
        raise StreamerError(f"--room: {exc}") from None
    check_outputs({"--report": args.report}, inputs=[path, args.timeline.partition("#")[0]])
    planning = SharedPlanning(cfg.planner, load_prior(cfg.planner))
    with planning:
        report = asyncio.run(
            replay(
                cfg.service,
                planning.planner,
                args.video,
                args.timeline,
                room=args.room,
                recognizer=args.recognizer,
                planner_config=cfg.planner,
            )
        )
    console.print(summary_table(report))
    if report["planning"]["moments"]:
        console.print(moments_table(report["planning"]))
    if args.report:
        atomic_write_json(args.report, report)
        console.print(f"wrote {args.report}")
    return 0


def summary_table(report: dict) -> Table:  # type: ignore[type-arg]
    t = Table(title=f"Replay of {Path(report['video']).name}", show_header=False)
    f, c = report["frames"], report["clips"]["comparison"]
    t.add_row("video / wall", f"{report['video_s']:.1f} s in {report['wall_s']:.2f} s "
              f"= {report['realtime_factor']}x real time")  # fmt: skip
    r = report["recognizer"]
    trained = f", trained on {r['trained_on']} frames" if r.get("trained_on") else ""
    t.add_row("recognizer", f"{r['spec']}{trained}, {r['rate_hz']:g} Hz")
    t.add_row("frames", f"decoded {f['decoded']}, processed {f['processed']}, dropped {f['dropped']}")
    t.add_row("clips", f"found {c['found_clips']}, true {c['true_clips']}, matched {c['matched']}, "
              f"onset error {c['onset_error_s']['mean_abs']} s")  # fmt: skip
    t.add_row("recommendations", str(len(report["recommendations"])))
    live = report["live"]
    kf = live["keyframes_per_recommendation"]
    t.add_row(
        "live NHFM",
        f"{live['clip_start']} at clip start + {live['refreshes']} refreshes; keyframes per recommendation "
        f"{kf['all'].get('mean', 0)} (clip start {kf['clip_start'].get('mean', 0)}, "
        f"refresh {kf['refresh'].get('mean', '-')}); with caption {live['with_caption']}",
    )
    texts = live["texts"]
    t.add_row("texts", f"published {texts['published']}, late {texts['late']}, dropped {texts['dropped']}")
    for stage, s in report["latency_ms"].items():
        if s.get("n"):
            t.add_row(
                f"latency {stage} (ms)", f"p50 {s['p50']}  p90 {s['p90']}  p99 {s['p99']}  max {s['max']}"
            )
    return t


def moments_table(planning: dict) -> Table:  # type: ignore[type-arg]
    """The paper's Table 1 layout, one row per moment: what was in force at the clip's start, and
    the last ranking before the next clip started."""
    t = Table(
        title="Next-action planning of what was published (%)",
        caption=f"{planning['targets']} clips with a successor; {planning['missed']} without a ranking in "
        f"force; {planning['refreshed_targets']} re-planned before the switch",
    )
    t.add_column("Moment")
    for name in METRIC_NAMES:
        for k in TOP_K:
            t.add_column(f"{name}\n@{k}", justify="right", no_wrap=True)
    labels = {"clip_start": "at clip start", "before_next": "last before next"}
    for moment, block in planning["moments"].items():
        metrics = block["metrics"]
        t.add_row(
            labels.get(moment, moment), *(f"{metrics[f'{n}@{k}']:.2f}" for n in METRIC_NAMES for k in TOP_K)
        )
    return t
