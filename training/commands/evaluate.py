"""``llm-sap evaluate``: a planner (or predictions made elsewhere) on the paper's split.

``--compare NAME=SPEC[@ADAPTER][+prior[:W]]`` (repeatable) scores several planners in one table
instead (see ``training.compare``); ``--plot OUT.png`` draws the rows as grouped bars.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from rich.console import Console

from planner.actions import ACTIONS
from planner.atomic import atomic_write_json
from planner.calibration import CalibrationReport
from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.outputs import check_outputs
from planner.time_to_next import DurationModel
from training.calibration_eval import (
    cross_validated_temperature,
    plot_reliability,
    prior_oof_predictions,
    probability_matrix,
    report_for,
    scaled,
)
from training.cholect50 import PlanningSample, load_annotations
from training.compare import PAPER_LABEL, comparison_json, evaluate_specs, parse_compare_specs, plot_metrics
from training.config import AppConfig
from training.evaluate import (
    PAPER_BEST,
    Prediction,
    history_memories,
    predict,
    read_predictions,
    refuse_learned_on_its_training_videos,
    score,
    seen_in_training,
    write_predictions,
)
from training.exceptions import PredictionsError, UsageError
from training.planning import build_planner, build_prior
from training.sequence_selection import score_time_to_next
from training.splits import load_split
from training.tables import metrics_table, progress_bar

log = structlog.get_logger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    add_planner_arguments(p)
    p.add_argument("--prior", type=Path, help="a fitted prior JSON (default: fit on the training videos)")
    p.add_argument("--split", choices=("train", "test", "all"), help="samples to score (default: test)")
    p.add_argument(
        "--split-file",
        type=Path,
        help='{"train": [video ids], "test": [video ids]} instead of the paper\'s split; calibration '
        "is fitted on its train videos only",
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="skip planning the training samples to fit and report the calibration temperature by CV",
    )
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
    p.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="grouped bar chart of the rows (matplotlib); a single planner also gets a reliability "
        "diagram beside it (OUT.reliability.png)",
    )


def overrides(args: argparse.Namespace) -> list[str]:
    return flag_overrides(
        args, {**PLANNER_FLAGS, "split": "training.evaluate.split", "history": "training.evaluate.history"}
    )


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs(  # every output checked before anything is computed or written
        {"--json": args.json_out, "--plot": args.plot, "--predictions-out": args.predictions_out},
        inputs=[args.annotations, args.prior, args.predictions_in, args.split_file],
    )
    if args.compare:
        return run_compare(cfg, args, console)
    data = load_annotations(args.annotations)
    split = load_split(args.split_file, data)
    samples = split.samples(data, cfg.training.evaluate.split)
    extra_rows: list[tuple[str, dict[str, float]]] = []
    extra_json: dict[str, Any] = {}
    reliability: list[tuple[str, CalibrationReport]] = []
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
        prior = build_prior(cfg, data, args.prior, split.train)
        planner = build_planner(cfg, prior)
        refuse_learned_on_its_training_videos(planner.engine, samples)
        memories = history_memories(
            cfg.training.evaluate.history,
            data,
            max_distant=cfg.planner.memory.max_distant,
            max_keyframes=cfg.planner.memory.max_keyframes,
        )
        train_samples = split.samples(data, "train")
        try:
            with progress_bar(f"planning with {planner.engine.name}", len(samples), console) as update:
                predictions = predict(planner, samples, memory_factory=memories, on_progress=update)
            train_predictions = []
            # the prior and the learned planner are fitted on the training videos: their training
            # samples are in-sample. The prior is refit per fold instead; the learned model reports
            # its own nested CV.
            calibrate = not args.no_calibration and bool(train_samples)
            if (
                calibrate
                and planner.engine.name == "prior"
                and args.prior is None
                and cfg.planner.prior_path is None
            ):
                train_predictions = prior_oof_predictions(data, train_samples, cfg.planner.prior, memories)
            elif calibrate and not planner.instant:
                with progress_bar("training samples, for calibration", len(train_samples), console) as update:
                    train_predictions = predict(
                        planner, train_samples, memory_factory=memories, on_progress=update
                    )
        finally:
            planner.close()
        if args.predictions_out:
            write_predictions(args.predictions_out, predictions)
        ranked = {(p.video, p.clip): p.ranked for p in predictions}
        name = f"{planner.engine.name}: {planner.engine.model}"
        if not planner.instant:  # a model engine: say how it was fused, as --compare does
            name += f" + prior λ={planner.settings.fusion_weight:g}"
        fallbacks = sum(p.degraded for p in predictions)
        extra_json["fallbacks"] = fallbacks
        if not planner.instant:
            console.print(
                f"{fallbacks} of {len(predictions)} samples fell back to the prior "
                "(engine failure or deadline)"
            )
        extra_json |= _calibration(
            samples, predictions, train_samples, train_predictions, name, console, reliability
        )
        learned = getattr(planner.engine, "learned", None)
        if learned is not None and learned.cv.get("families"):
            family = {"gradient_boosting": "gboost", "logistic_regression": "logreg"}[learned.family]
            row = next((f for f in learned.cv["families"] if f["family"] == family), None)
            if row is not None:
                console.print(
                    f"the learned model's own nested CV on its training videos: ECE "
                    f"{100 * row['ece_uncalibrated']:.1f}% → {100 * row['ece']:.1f}%, Brier "
                    f"{row['brier_top1_uncalibrated']:.3f} → {row['brier_top1']:.3f} with its temperature "
                    f"(T = {learned.temperature:g} fitted on all of them)"
                )
                extra_json["calibration"]["model_cv"] = row
        sequence_leaks = seen_in_training(planner.sequence_model, samples)
        if sequence_leaks:  # the two-step row and time to next come from the packaged learned model
            console.print(
                f"the two-step row and time to next are not reported: the sequence model was trained on "
                f"{len(sequence_leaks)} of these videos (fit one on this split: llm-sap fit-learned)"
            )
        elif all(p.two_step for p in predictions):
            two = score(samples, {(p.video, p.clip): p.two_step for p in predictions})
            extra_rows.append(("'next or the one after' ranking (judge by the relaxed columns)", two.metrics))
            extra_json["next_or_after"] = two.to_dict()
        model = planner.sequence_model
        if model is not None and model.time_to_next is not None and not sequence_leaks:
            extra_json["time_to_next"] = _time_to_next(samples, model.time_to_next, console)
    report = score(samples, ranked)
    caption = (
        f"{report.samples} samples ({report.relaxed_samples} with a next clip, for the relaxed metrics) "
        f"from {report.videos} videos, split '{cfg.training.evaluate.split}' of '{split.name}', history "
        f"'{cfg.training.evaluate.history}'"
    )
    rows = [("Paper, Table 1 (best per column)", PAPER_BEST), (name, report.metrics), *extra_rows]
    console.print(metrics_table("CholecT50-SAP next-action planning (%)", rows, caption))
    if args.json_out:
        atomic_write_json(
            args.json_out,
            {
                **report.to_dict(),
                "planner": name,
                "split": cfg.training.evaluate.split,
                "split_file": str(args.split_file) if args.split_file else None,
                "history": cfg.training.evaluate.history,
                **extra_json,
            },
        )
    if args.plot:
        plot_metrics([(name, report.metrics)], args.plot)
        console.print(f"wrote {args.plot}")
        if reliability:
            path = args.plot.with_name(f"{args.plot.stem}.reliability.png")
            plot_reliability(reliability, path)
            console.print(f"wrote {path}")
    log.info("evaluate.done", samples=report.samples, slacc1=report.metrics["SLAcc@1"])
    return 0


def _calibration(
    samples: Sequence[PlanningSample],
    predictions: Sequence[Prediction],
    train_samples: Sequence[PlanningSample],
    train_predictions: Sequence[Prediction],
    name: str,
    console: Console,
    reliability: list[tuple[str, CalibrationReport]],
) -> dict[str, Any]:
    """ECE (10 bins) and Brier of the top-1 probability as served; with training predictions, the
    temperature by grouped CV on the training videos and its effect on the evaluated samples."""
    probs = probability_matrix(predictions)
    targets = np.array([ACTIONS.index(s.target) for s in samples])
    served = report_for(probs, targets)
    out: dict[str, Any] = {"calibration": {"served": served.to_dict()}}
    line = f"calibration (top-1): ECE {100 * served.ece:.1f}%, Brier {served.brier:.3f} as served"
    reliability.append((f"{name.split(':')[0]}, as served", served))
    if train_predictions:
        cv = cross_validated_temperature(train_predictions, train_samples)
        refit = report_for(scaled(probs, cv.temperature), targets)
        out["calibration"] |= {"cv": cv.to_dict(), "with_cv_temperature": refit.to_dict()}
        line += (
            f"; CV on {len(train_samples)} training samples: ECE {100 * cv.cv_raw.ece:.1f}% → "
            f"{100 * cv.cv_calibrated.ece:.1f}%, Brier {cv.cv_raw.brier:.3f} → {cv.cv_calibrated.brier:.3f} "
            f"with a fitted temperature; T = {cv.temperature:g} here gives ECE {100 * refit.ece:.1f}%, "
            f"Brier {refit.brier:.3f} (serve it with --set planner.settings.temperature={cv.temperature:g}, "
            "unless the engine is calibrated already; an adapter trained on these samples makes "
            "this in-sample)"
        )
        reliability.append((f"with T={cv.temperature:g}", refit))
    console.print(line)
    return out


def _time_to_next(
    samples: Sequence[PlanningSample], model: DurationModel, console: Console
) -> dict[str, Any]:
    """The range for each sample's current clip (its duration is the next start minus its start)."""
    clips = [(s.nearest, float(s.start_s - s.history_starts[-1])) for s in samples
             if s.nearest and len(s.history_starts) == len(s.history)]  # fmt: skip
    if not clips:
        return {}
    start = score_time_to_next(model, clips, None)
    refresh = score_time_to_next(model, clips)
    console.print(
        f"time to next action: MAE {start.mae_s:.1f} s at clip start "
        f"(per-action median {start.baseline_mae_s:.1f}), "
        f"{refresh.mae_s:.1f} s over 15 s refreshes (median {refresh.baseline_mae_s:.1f}); the range holds "
        f"the switch in {start.coverage:.0%} at clip start, {refresh.coverage:.0%} over refreshes"
    )
    return {"start": start.to_dict(), "refresh": refresh.to_dict()}


def run_compare(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    single = {"--planner": args.planner, "--adapter": args.adapter,
              "--predictions-in": args.predictions_in, "--predictions-out": args.predictions_out}  # fmt: skip
    clash = [flag for flag, value in single.items() if value]
    if clash:
        raise UsageError(f"--compare names each row's planner: drop {', '.join(clash)}")
    specs = parse_compare_specs(args.compare)
    data = load_annotations(args.annotations)
    split = cfg.training.evaluate.split
    chosen = load_split(args.split_file, data)
    samples = chosen.samples(data, split)
    prior = build_prior(cfg, data, args.prior, chosen.train)
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
