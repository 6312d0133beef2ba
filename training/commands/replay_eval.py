"""``llm-sap replay-eval``: the split's videos through the live pipeline, scored with the paper's metrics.

``--annotations FILE [--split test|train|all] [--videos DIR] [--planner SPEC] [--json OUT]``.
Without ``--videos`` each video is synthetic, drawn from its annotation timeline; with it,
``DIR/VID06.mp4`` (and so on) are played. See ``training.replay_eval``. Bad input (an unknown
split, a missing videos folder or video, a video shorter than its timeline, an unwritable output)
is one line and exit 2, before anything runs; nothing is written then.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog
from rich.console import Console

from planner.atomic import atomic_write_json
from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.factory import SharedPlanning
from planner.outputs import check_outputs
from training.cholect50 import load_annotations
from training.config import AppConfig
from training.evaluate import PAPER_BEST, refuse_learned_on_its_training_videos
from training.planning import build_prior
from training.replay_eval import plan_jobs, replay_eval
from training.tables import metrics_table, progress_bar

log = structlog.get_logger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    p.add_argument("--split", choices=("train", "test", "all"), help="videos to play (default: test)")
    p.add_argument("--videos", type=Path, help="folder with VIDxx.mp4 recordings (default: synthetic videos)")
    add_planner_arguments(p)
    p.add_argument("--prior", type=Path, help="a fitted prior JSON (default: fit on the training videos)")
    p.add_argument("--json", type=Path, dest="json_out", help="write the report as JSON")


def overrides(args: argparse.Namespace) -> list[str]:
    return flag_overrides(args, {**PLANNER_FLAGS, "split": "training.evaluate.split"})


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs({"--json": args.json_out}, inputs=[args.annotations, args.prior])
    split = cfg.training.evaluate.split
    data = load_annotations(args.annotations)
    jobs = plan_jobs(data, split, args.videos)  # every video checked before anything runs
    prior = build_prior(cfg, data, args.prior)
    with SharedPlanning(cfg.planner, prior) as planning:
        refuse_learned_on_its_training_videos(planning.engine, data.samples_of([job.video for job in jobs]))
        with progress_bar(f"{len(jobs)} videos through the live pipeline", len(jobs), console) as update:
            done: list[str] = []

            def video_done(video: str) -> None:
                done.append(video)
                update(len(done))

            report = replay_eval(
                data,
                args.annotations,
                split,
                args.videos,
                cfg.service,
                cfg.planner,
                planning.planner,
                on_video_done=video_done,
                jobs=jobs,
            )
            name = f"{planning.engine.name}: {planning.engine.model}"
    report["planner"] = name
    caption = (
        f"{report['samples']} samples ({report['relaxed_samples']} for the relaxed metrics) from "
        f"{report['videos']} videos, split '{split}', {report['source']}; {report['stream_s']:.0f} s of "
        f"video in {report['wall_s']:.1f} s"
    )
    rows = [
        ("Paper, Table 1 (best per column)", PAPER_BEST),
        ("live: in force at clip start", report["moments"]["clip_start"]),
        ("live: last before the next clip", report["moments"]["before_next"]),
        ("offline, same histories", report["offline_same_history"]),
    ]
    console.print(metrics_table(f"Replay-based planning evaluation: {name} (%)", rows, caption))
    d = report["diagnostics"]
    console.print(
        f"where live and offline differ: {d['missed']} samples without a ranking in force, "
        f"{d['history_differs_from_actions']} live histories differ from the clips' actions, "
        f"{d['degraded']} fell back to the prior, {d['refreshed_before_next']} re-planned before the "
        f"switch ({d['top1_changed_by_refresh']} changed their top-1), "
        f"{d['top1_differs_from_offline']} top-1 at clip start differ from offline"
    )
    live, lat = report["live"], report["latency_ms"]
    console.print(
        f"live: {live['rankings']} rankings ({live['refreshes']} refreshes), {live['captions']} captions, "
        f"keyframes per recommendation {live['keyframes_per_recommendation']}, frames decoded "
        f"{live['frames_decoded']} dropped {live['frames_dropped']}; plan p50/p99 "
        f"{lat['plan_rank'].get('p50', '-')}/{lat['plan_rank'].get('p99', '-')} ms"
    )
    if args.json_out:
        atomic_write_json(args.json_out, report)
        console.print(f"wrote {args.json_out}")
    return 0
