"""``llm-sap evaluate``: a planner (or predictions made elsewhere) on the paper's split.

``--compare NAME=SPEC[@ADAPTER][+prior[:W]]`` (repeatable) scores several planners in one table
instead (see ``training.compare``); ``--plot OUT.png`` draws the rows as grouped bars.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import structlog
from rich.console import Console

from planner.atomic import atomic_write_json
from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.outputs import check_outputs
from training.cholect50 import load_annotations
from training.compare import PAPER_LABEL, comparison_json, evaluate_specs, parse_compare_specs, plot_metrics
from training.config import AppConfig
from training.evaluate import (
    PAPER_BEST,
    history_memories,
    predict,
    read_predictions,
    score,
    write_predictions,
)
from training.exceptions import PredictionsError, UsageError
from training.planning import build_planner, build_prior
from training.tables import metrics_table, progress_bar

log = structlog.get_logger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    add_planner_arguments(p)
    p.add_argument("--prior", type=Path, help="a fitted prior JSON (default: fit on the training videos)")
    p.add_argument("--split", choices=("train", "test", "all"), help="samples to score (default: test)")
    p.add_argument(
        "--history",
        choices=("sample", "actions"),
        help="the planner's history: each sample's own Distant/Nearest fields (default, the paper's "
        "setting) or the clips' Action sequence (what a live recognizer sees)",
    )
    p.add_argument("--predictions-in", type=Path, help="score these JSONL predictions instead of a planner")
    p.add_argument("--predictions-out", type=Path, help="write the planner's predictions as JSONL")
    p.add_argument("--json", type=Path, dest="json_out", help="write the metrics as JSON")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=SPEC[@ADAPTER][+prior[:W]]",
        help="a planner row (repeatable), e.g. sft+prior=transformers:/m@out/sft+prior",
    )
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="grouped bar chart of the rows (matplotlib)")


def overrides(args: argparse.Namespace) -> list[str]:
    return flag_overrides(
        args, {**PLANNER_FLAGS, "split": "training.evaluate.split", "history": "training.evaluate.history"}
    )


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs(  # every output checked before anything is computed or written
        {"--json": args.json_out, "--plot": args.plot, "--predictions-out": args.predictions_out},
        inputs=[args.annotations, args.prior, args.predictions_in],
    )
    if args.compare:
        return run_compare(cfg, args, console)
    data = load_annotations(args.annotations)
    samples = data.split(cfg.training.evaluate.split)
    if args.predictions_in:
        ranked = read_predictions(args.predictions_in)
        known = {s.key for s in data.samples}
        unknown = [k for k in ranked if k not in known]
        if unknown:
            v, c = unknown[0]
            raise PredictionsError(
                f"{args.predictions_in}: {v}/{c} is not a planning sample of {args.annotations}"
            )
        name = f"predictions: {args.predictions_in.name}"
    else:
        prior = build_prior(cfg, data, args.prior)
        planner = build_planner(cfg, prior)
        try:
            with progress_bar(f"planning with {planner.engine.name}", len(samples), console) as update:
                memories = history_memories(
                    cfg.training.evaluate.history,
                    data,
                    max_distant=cfg.planner.memory.max_distant,
                    max_keyframes=cfg.planner.memory.max_keyframes,
                )
                predictions = predict(planner, samples, memory_factory=memories, on_progress=update)
        finally:
            planner.close()
        if args.predictions_out:
            write_predictions(args.predictions_out, predictions)
        ranked = {(p.video, p.clip): p.ranked for p in predictions}
        name = f"{planner.engine.name}: {planner.engine.model}"
    report = score(samples, ranked)
    caption = (
        f"{report.samples} samples ({report.relaxed_samples} with a next clip, for the relaxed metrics) "
        f"from {report.videos} videos, split '{cfg.training.evaluate.split}', history "
        f"'{cfg.training.evaluate.history}'"
    )
    rows = [("Paper, Table 1 (best per column)", PAPER_BEST), (name, report.metrics)]
    console.print(metrics_table("CholecT50-SAP next-action planning (%)", rows, caption))
    if args.json_out:
        atomic_write_json(
            args.json_out,
            {
                **report.to_dict(),
                "planner": name,
                "split": cfg.training.evaluate.split,
                "history": cfg.training.evaluate.history,
            },
        )
    if args.plot:
        plot_metrics([(name, report.metrics)], args.plot)
        console.print(f"wrote {args.plot}")
    log.info("evaluate.done", samples=report.samples, slacc1=report.metrics["SLAcc@1"])
    return 0


def run_compare(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    single = {"--planner": args.planner, "--adapter": args.adapter,
              "--predictions-in": args.predictions_in, "--predictions-out": args.predictions_out}  # fmt: skip
    clash = [flag for flag, value in single.items() if value]
    if clash:
        raise UsageError(f"--compare names each row's planner: drop {', '.join(clash)}")
    specs = parse_compare_specs(args.compare)
    data = load_annotations(args.annotations)
    split = cfg.training.evaluate.split
    samples = data.split(split)
    prior = build_prior(cfg, data, args.prior)
    rows = evaluate_specs(cfg, prior, specs, samples, lambda what, n: progress_bar(what, n, console))
    first = rows[0].report
    caption = (f"{first.samples} samples ({first.relaxed_samples} for the relaxed metrics) from "
               f"{first.videos} videos, split '{split}'; λ = fusion weight with the prior")  # fmt: skip
    table_rows = [(PAPER_LABEL, PAPER_BEST), *((r.label, r.report.metrics) for r in rows)]
    console.print(metrics_table("CholecT50-SAP next-action planning (%)", table_rows, caption))
    for r in rows:
        if r.degraded:
            console.print(
                f"{r.spec.name}: {r.degraded} samples fell back to the prior (engine failure or deadline)"
            )
    if args.json_out:
        atomic_write_json(args.json_out, comparison_json(rows, split))
    if args.plot:
        plot_metrics([(r.label, r.report.metrics) for r in rows], args.plot)
        console.print(f"wrote {args.plot}")
    log.info("evaluate.compare_done", rows=len(rows), samples=first.samples)
    return 0
