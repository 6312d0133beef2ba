"""``llm-sap distill``: teacher answers for the training samples, verified, cached, as chat JSONL."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import structlog
from rich.console import Console
from rich.table import Table

from planner.atomic import atomic_write_json
from planner.outputs import check_outputs
from training.cholect50 import TEST_VIDEOS, load_annotations
from training.config import AppConfig
from training.distill import DistillError, ResponseCache, distill, write_chats
from training.exceptions import UsageError
from training.planning import build_prior
from training.samples import load_captions, training_samples
from training.sharegpt import DEFAULT_NAME, export_sharegpt
from training.tables import progress_bar
from training.teachers import TeacherContext

log = structlog.get_logger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    p.add_argument("--teacher", help="reference (default) | openai:URL | transformers:PATH")
    p.add_argument("--model", help="served model name for openai:URL (default: the server's first model)")
    p.add_argument("--out", type=Path, required=True, help="chat JSONL to write (accepted samples)")
    p.add_argument("--cache", type=Path, help="answer cache folder (default: OUT's folder/.distill-cache)")
    p.add_argument("--offline", action="store_true", help="use only cached answers; a miss is an error")
    p.add_argument("--accept", choices=("top1", "top3"), help="accept: target = top-1 / in the top 3")
    p.add_argument("--k", type=int, help="answers per prompt, majority vote on the top-1 (default 1)")
    p.add_argument("--variant", choices=("indirect", "direct"), help="IndirNHFM (default) or DirNHFM")
    p.add_argument("--frame-root", type=Path, help="folder holding the near frames (VIDxx/000123.png)")
    p.add_argument("--captions", type=Path, help="captions C_t: JSON {'VID01/5': ...} or JSONL")
    p.add_argument("--prior", type=Path, help="a fitted prior JSON for the reference teacher")
    p.add_argument("--sharegpt", type=Path, help="also export to LLaMA-Factory sharegpt in this folder")
    p.add_argument("--report", type=Path, help="acceptance report JSON (default: OUT with .report.json)")


def overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for key in ("teacher", "model", "accept", "variant"):
        value = getattr(args, key)
        if value:
            out.append(f"training.distill.{key}={json.dumps(value)}")
    if args.k is not None:
        out.append(f"training.distill.samples_per_prompt={args.k}")
    return out


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs({"--out": args.out}, inputs=[args.annotations])
    settings = cfg.training.distill
    data = load_annotations(args.annotations)
    prior = build_prior(cfg, data, args.prior)
    leaked = sorted(set(prior.trained_on) & set(TEST_VIDEOS))
    if leaked:
        raise UsageError(f"the prior was fit on test videos ({', '.join(leaked)}); fit it on training videos")
    if args.frame_root is not None and not args.frame_root.is_dir():
        raise UsageError(f"--frame-root {args.frame_root} is not a folder")
    captions = load_captions(args.captions) if args.captions else None
    memory = cfg.planner.memory  # the same bounds the planner applies at inference
    sample_set = training_samples(
        data,
        settings.variant,
        captions=captions,
        frame_root=args.frame_root,
        max_distant=memory.max_distant,
        max_keyframes=memory.max_keyframes,
    )
    if sample_set.skipped:
        video, clip, why = sample_set.skipped[0]
        console.print(
            f"skipped {len(sample_set.skipped)} samples without frames (first: {video}/{clip}: {why})",
            markup=False,
        )
    cache = ResponseCache(args.cache or args.out.parent / ".distill-cache")
    ctx = TeacherContext(prior=prior, settings=settings)
    t0 = time.perf_counter()
    samples = sample_set.samples
    with progress_bar(f"distilling with {settings.teacher}", len(samples), console) as update:
        result = distill(samples, settings.teacher, ctx, cache, offline=args.offline, on_progress=update)
    seconds = round(time.perf_counter() - t0, 2)
    records = result.records()
    if not records:
        raise DistillError(f"no answer was accepted (accept={settings.accept}); {args.out} not written")
    write_chats(args.out, records)
    summary = {**result.summary(), "skipped_no_frames": len(sample_set.skipped), "seconds": seconds}
    summary["out"] = str(args.out)
    if args.sharegpt:
        summary["sharegpt"] = str(export_sharegpt(records, args.sharegpt))
        summary["sharegpt_dataset"] = DEFAULT_NAME
    report_path = args.report or args.out.with_suffix(".report.json")
    atomic_write_json(report_path, summary)
    console.print(_table(summary))
    console.print(f"wrote {len(records)} chats to {args.out}; report {report_path}", markup=False)
    if args.sharegpt:
        console.print(
            f"LLaMA-Factory: dataset_dir: {args.sharegpt}  dataset: {DEFAULT_NAME}  (template: qwen)",
            markup=False,
        )
    return 0


def _table(s: dict[str, object]) -> Table:
    table = Table(title=f"Distillation: {s['teacher']} ({s['model']}), accept={s['accept']}, k={s['k']}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("%", justify="right")
    table.add_row("training prompts", str(s["prompts"]), "")
    table.add_row("answers (k per prompt)", str(s["answers"]), "")
    table.add_row("  from the teacher / from the cache", f"{s['teacher_calls']} / {s['cache_hits']}", "")
    table.add_row("parseable answers", str(s["parseable_answers"]), f"{s['parse_rate']:.2f}")
    table.add_row("majority top-1 = target", "", f"{s['top1_rate']:.2f}")
    table.add_row("target in the kept top 3", "", f"{s['top3_rate']:.2f}")
    table.add_row("accepted", str(s["accepted"]), f"{s['acceptance_rate']:.2f}")
    rejected = s["rejected"]
    if isinstance(rejected, dict):
        for reason, count in sorted(rejected.items()):
            table.add_row(f"  rejected: {reason}", str(count), "")
    return table
