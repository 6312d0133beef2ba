"""``llm-sap demo``: everything on embedded defaults, watched from a terminal; ends by itself.

Exit codes: 0 the demo ran to its end; 1 its stream failed; 2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
from pathlib import Path

from rich.console import Console

from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.factory import SharedPlanning, load_prior
from streamer.config import LiveConfig
from streamer.demo import run_demo
from streamer.exceptions import StreamerError, StreamFailedError
from streamer.sources import local_file
from streamer.sources.video import check_video_file

MAX_SPEED = 1000.0  # the synthetic procedure lasts minutes: faster is a blink


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--video", help="a video file to use instead of the synthetic procedure (needs --timeline)"
    )
    p.add_argument("--timeline", help="CSV start_s,action (or total_video_info.json#VIDxx) for --video")
    p.add_argument("--speed", type=float, default=8.0, help="synthetic video speed-up (default 8x)")
    add_planner_arguments(p)


def overrides(args: argparse.Namespace) -> list[str]:
    out = [] if args.log_level else ["logging.level='warning'"]  # the terminal view is the output
    return out + flag_overrides(args, PLANNER_FLAGS)


def run(cfg: LiveConfig, args: argparse.Namespace, console: Console) -> int:
    if args.video and not args.timeline:
        raise StreamerError("--video needs --timeline (the demo's recognizer is the timeline oracle)")
    if not math.isfinite(args.speed) or not 0 < args.speed <= MAX_SPEED:
        raise StreamerError(f"--speed must be a number in (0, {MAX_SPEED:g}], got {args.speed}")
    path = local_file(args.video) if args.video else None
    if path is not None:
        if not path.is_file():
            raise StreamerError(f"video {path} not found")
        check_video_file(str(path))
    planning = SharedPlanning(cfg.planner, load_prior(cfg.planner))
    console.rule("llm-sap demo: what an MQTT subscriber in the operating room receives")
    with planning, tempfile.TemporaryDirectory(prefix="llm-sap-demo-") as tmp:
        summary = asyncio.run(
            run_demo(
                cfg.service,
                planning.planner,
                planning.prior,
                console,
                Path(tmp),
                video=args.video,
                timeline=args.timeline,
                speed=args.speed,
                planner_config=cfg.planner,
            )
        )
    received = summary["messages"] if summary["messages"] >= 0 else "? (the view missed the end)"
    console.rule(f"done: {summary['clips']} clips, {summary['recommendations']} recommendations, "
                 f"{received} MQTT messages received")  # fmt: skip
    if summary["failed"]:
        raise StreamFailedError("; ".join(f"room {room} failed: {why}" for room, why in summary["failed"]))
    return 0
