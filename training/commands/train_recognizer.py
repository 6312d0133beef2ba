"""``llm-sap train-recognizer``: train the streamer's frame classifier and judge it on held-out videos.

Data: ``--frames labels.csv`` (``path,label[,video]``), or videos with timelines (``--video V
--timeline T``, repeated, or ``--manifest videos.csv`` with ``video,timeline``), or
``--synthetic N`` synthetic videos. The held-out split is by video. The checkpoint loads as
``--recognizer checkpoint:FILE`` in ``serve`` and ``replay``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import structlog
from rich.console import Console
from rich.table import Table

from planner.actions import ACTIONS
from planner.atomic import atomic_write_json
from planner.outputs import check_outputs
from streamer.recognizers.frame_model import FrameClassifierRecognizer
from streamer.recognizers.torchscript import load_torchscript, save_torchscript
from training.config import AppConfig
from training.exceptions import UsageError
from training.recognizer_data import (
    LabelledFrames,
    from_synthetic,
    from_videos,
    load_frames,
    read_frame_csv,
    read_manifest,
    split_by_video,
)
from training.recognizer_training import (
    FrameMetrics,
    TrainSettings,
    train_recognizer,
    write_recognizer_checkpoint,
)
from training.tables import progress_bar

log = structlog.get_logger(__name__)
_DEFAULTS = TrainSettings()


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data (one kind)")
    d.add_argument("--frames", type=Path, metavar="CSV", help="CSV path,label[,video]; paths relative to it")
    d.add_argument("--video", action="append", default=[], help="a video file (with --timeline; repeatable)")
    d.add_argument("--timeline", action="append", default=[], help="CSV start_s,action or FILE.json#VIDxx")
    d.add_argument("--manifest", type=Path, metavar="CSV", help="CSV video,timeline; paths relative to it")
    d.add_argument("--synthetic", type=int, metavar="N", help="N synthetic videos (demo, tests)")
    d.add_argument("--synthetic-duration", type=float, default=60.0, metavar="S", help="seconds each (60)")
    d.add_argument("--sample-hz", type=float, default=1.0, help="frames kept per video second (1)")
    d.add_argument("--workers", type=int, default=2, help="decoding / loading threads (2)")
    s = p.add_argument_group("held-out split (by video)")
    s.add_argument("--val-videos", action="append", default=[], metavar="NAMES", help="comma-separated names")
    s.add_argument("--val-fraction", type=float, default=0.25, help="else this share of videos (0.25)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=_DEFAULTS.epochs)
    t.add_argument("--lr", type=float, default=_DEFAULTS.lr)
    t.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    t.add_argument("--input-size", type=int, default=_DEFAULTS.input_size, help="model input side in pixels")
    t.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    t.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--json", type=Path, dest="json_out", help="write the held-out metrics as JSON")
    p.add_argument(
        "--torchscript", type=Path, metavar="FILE", help="also write a TorchScript copy (torchscript:FILE)"
    )


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def _settings(args: argparse.Namespace) -> TrainSettings:
    try:
        return TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             input_size=args.input_size, seed=args.seed, threads=args.threads)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load(args: argparse.Namespace, input_size: int, console: Console) -> LabelledFrames:
    given = {
        "--frames": args.frames is not None,
        "--video/--timeline": bool(args.video or args.timeline),
        "--manifest": args.manifest is not None,
        "--synthetic": args.synthetic is not None,
    }
    kinds = [k for k, v in given.items() if v]
    if len(kinds) != 1:
        raise UsageError(
            f"give one kind of data: --frames, --video/--timeline, --manifest or --synthetic (got {kinds})"
        )
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.frames:
        rows = read_frame_csv(args.frames)
        with progress_bar("loading frames", len(rows.paths), console) as update:
            return load_frames(rows, input_size, workers=args.workers, on_progress=update)
    if args.synthetic is not None:
        with progress_bar("rendering synthetic videos", args.synthetic, console) as update:
            return from_synthetic(args.synthetic, input_size, duration_s=args.synthetic_duration,
                                  sample_hz=args.sample_hz, seed=args.seed, on_progress=update)  # fmt: skip
    if args.manifest:
        pairs = read_manifest(args.manifest)
    else:
        if len(args.video) != len(args.timeline):
            raise UsageError(
                f"{len(args.video)} --video but {len(args.timeline)} --timeline: give one of each"
            )
        pairs = list(zip(args.video, args.timeline, strict=True))
    with progress_bar("decoding videos", len(pairs), console) as update:
        return from_videos(
            pairs, input_size, sample_hz=args.sample_hz, workers=args.workers, on_progress=update
        )


def metrics_tables(m: FrameMetrics, held_out: list[str]) -> tuple[Table, Table]:
    per_class = Table(
        title=f"Held-out frames: accuracy {100 * m.accuracy:.1f} %, macro F1 "
        f"{'—' if m.macro_f1 is None else f'{m.macro_f1:.3f}'} ({m.frames} frames, {len(held_out)} videos)"
    )
    for col in ("Action", "Precision", "Recall", "F1", "Frames"):
        per_class.add_column(col, justify="left" if col == "Action" else "right")
    for action, s in m.per_class.items():
        cells = ["—" if v is None else f"{v:.3f}" for v in (s.precision, s.recall, s.f1)]
        per_class.add_row(action, *cells, str(s.support))
    confusion = Table(title="Confusion (rows: true, columns: predicted)")
    confusion.add_column("true \\ predicted")
    for action in ACTIONS:
        confusion.add_column(action.replace(" ", "\n"), justify="right")
    for action, row in zip(ACTIONS, m.confusion, strict=True):
        confusion.add_row(action, *(str(v) for v in row))
    return per_class, confusion


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs({"--out": args.out, "--json": args.json_out, "--torchscript": args.torchscript})
    settings = _settings(args)
    data = _load(args, settings.input_size, console)
    val_names = [v.strip() for item in args.val_videos for v in item.split(",") if v.strip()]
    train_idx, val_idx, held_out = split_by_video(data, val_names, args.val_fraction, args.seed)
    log.info("recognizer.data", frames=len(data), videos=len(data.video_names), held_out=held_out,
             train_frames=len(train_idx), held_out_frames=len(val_idx),
             classes=data.class_counts())  # fmt: skip
    unseen = sorted({ACTIONS[i] for i in data.labels[val_idx]} - {ACTIONS[i] for i in data.labels[train_idx]})
    if unseen:  # those frames cannot be recognised: the held-out numbers will say so (one line, the log's)
        log.warning("recognizer.unseen_held_out_actions", actions=unseen, note="never seen in training")
    steps = settings.epochs * math.ceil(len(train_idx) / settings.batch_size)
    with progress_bar(
        f"training ({len(train_idx)} frames, {settings.epochs} epochs)", steps, console
    ) as update:
        result = train_recognizer(data, train_idx, val_idx, settings, on_step=update)
    meta = write_recognizer_checkpoint(args.out, result, settings, data, held_out)
    FrameClassifierRecognizer.load(args.out)  # the streamer can read what was written
    if args.torchscript:
        save_torchscript(result.model, args.torchscript, input_size=settings.input_size, mean=result.mean,
                         std=result.std, meta=meta)  # fmt: skip
        load_torchscript(args.torchscript)
        console.print(f"wrote {args.torchscript} (TorchScript: --recognizer torchscript:{args.torchscript})")
    for table in metrics_tables(result.held_out, held_out):
        console.print(table)
    console.print(f"loss by epoch: {', '.join(f'{v:.4f}' for v in result.epoch_losses)}; "
                  f"{result.seconds:.1f} s; wrote {args.out}")  # fmt: skip
    if args.json_out:
        atomic_write_json(args.json_out, {"checkpoint": str(args.out), **meta})
    log.info(
        "recognizer.done",
        out=str(args.out),
        accuracy=result.held_out.accuracy,
        macro_f1=result.held_out.macro_f1,
    )
    return 0
