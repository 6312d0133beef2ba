"""``llm-sap fit-learned``: compare next-action model families by CV on training videos, fit the
learned planner (multinomial logistic regression + time-to-next ranges) and write it as JSON.

Choosing uses only the split's training videos (``SELECTION_RULE`` in
``training.sequence_selection``); the test videos are scored afterwards, for the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from planner.actions import ACTIONS
from planner.atomic import atomic_write_json
from planner.calibration import calibration_report
from planner.learned import LearnedModel
from planner.outputs import check_outputs
from planner.prior import PriorSettings, SequencePrior
from training.calibration_eval import plot_reliability
from training.cholect50 import Annotations, PlanningSample, load_annotations
from training.config import AppConfig
from training.evaluate import PAPER_BEST
from training.exceptions import UsageError
from training.metrics import Scored, compute_metrics
from training.sequence_selection import (
    FAMILIES,
    LEARNED_FAMILIES,
    MARKOV2,
    SELECTION_RULE,
    CVSettings,
    choose_range,
    cross_validate_families,
    cross_validate_time_to_next,
    finished_clips,
    fit_final,
    ranked_labels,
    sample_timeline,
    score_time_to_next,
)
from training.splits import load_split
from training.tables import metrics_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    p.add_argument("--split-file", type=Path, help='{"train": [...], "test": [...]} (default: the paper\'s)')
    p.add_argument(
        "--out", type=Path, help="write the fitted model here (the shipped one: planner/data/learned.json)"
    )
    p.add_argument("--json", type=Path, dest="json_out", help="write the CV and test figures as JSON")
    p.add_argument("--folds", type=int, default=5, help="grouped CV folds over training videos (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="CV repeats with reshuffled videos (default 3)")
    p.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"families to cross-validate (default {','.join(FAMILIES)})",
    )
    p.add_argument("--no-cv", action="store_true", help="only fit the model (no family comparison)")
    p.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="reliability diagram of every family's CV probabilities"
    )


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs(
        {"--out": args.out, "--json": args.json_out, "--plot": args.plot},
        inputs=[args.annotations, args.split_file],
    )
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise UsageError(f"--families: {unknown[0] if unknown else '(none)'!r} is not one of {FAMILIES}")
    if not 2 <= args.folds <= 50 or not 1 <= args.repeats <= 20:
        raise UsageError(f"--folds must be in 2..50 and --repeats in 1..20, got {args.folds}, {args.repeats}")
    data = load_annotations(args.annotations)
    split = load_split(args.split_file, data)
    cv_settings = CVSettings(n_folds=args.folds, repeats=args.repeats)
    cv: dict[str, Any] = {"folds": args.folds, "repeats": args.repeats, "split": split.name,
                          "rule": SELECTION_RULE}  # fmt: skip
    range_q = (0.25, 0.75)
    learned_family = "logreg"
    if not args.no_cv:
        with console.status("cross-validating families on training videos ..."):
            results = cross_validate_families(data, split.train, families, cv_settings)
        console.print(_cv_table(results, len(split.train), cv_settings))
        if args.plot:
            rows = [(f"{r.family}, T=1", r.uncalibrated) for r in results if r.family == results[0].family]
            rows += [(f"{r.family}, CV temperature", r.calibrated) for r in results]
            plot_reliability(rows, args.plot)
            console.print(f"wrote {args.plot}")
        winner = results[0].family
        console.print(f"winner by the rule ({SELECTION_RULE}): [bold]{winner}[/bold]")
        learned = [r.family for r in results if r.family in LEARNED_FAMILIES]
        learned_family = learned[0] if learned else "logreg"
        ttn_cv = cross_validate_time_to_next(data, split.train, cv_settings)
        range_q = choose_range(ttn_cv)
        console.print(_ttn_table(ttn_cv, range_q))
        cv |= {
            "winner": winner,
            "learned_family": learned_family,
            "families": [r.to_dict() for r in results],
            "time_to_next": {
                f"{lo:g}-{hi:g}": {k: v.to_dict() for k, v in rep.items()} for (lo, hi), rep in ttn_cv.items()
            },
            "time_to_next_range": list(range_q),
        }
    model = fit_final(data, split.train, range_q, cv, family=learned_family)
    console.print(f"fitted {model.description} on {len(split.train)} videos ({model.settings['rows']} rows)")
    report: dict[str, Any] = {"split": split.name, "cv": cv}
    test = data.samples_of(split.test)
    if test:
        report["test"] = _test_report(data, split.train, model, test, console)
    if args.out:
        model.save(args.out)
        console.print(f"wrote {args.out}")
    if args.json_out:
        atomic_write_json(args.json_out, report)
    return 0


def _cv_table(results: list[Any], n_videos: int, s: CVSettings) -> Table:
    table = Table(title=f"Families, {s.repeats}x grouped {s.n_folds}-fold CV on {n_videos} training videos")
    for col in ("family", "SLAcc@1", "± folds", "VLAcc@1", "SLAcc@2", "ReSLAcc@1 2-step", "ECE raw→cal",
                "Brier raw→cal"):  # fmt: skip
        table.add_column(col, justify="left" if col == "family" else "right")
    for r in results:
        table.add_row(
            r.family,
            f"{r.metrics['SLAcc@1']:.2f}",
            f"{r.spread:.1f}",
            f"{r.metrics['VLAcc@1']:.2f}",
            f"{r.metrics['SLAcc@2']:.2f}",
            f"{r.two_step_metrics['ReSLAcc@1']:.2f}",
            f"{100 * r.uncalibrated.ece:.1f}→{100 * r.calibrated.ece:.1f}%",
            f"{r.uncalibrated.brier:.3f}→{r.calibrated.brier:.3f}",
        )
    return table


def _ttn_table(cv: dict[tuple[float, float], dict[str, Any]], chosen: tuple[float, float]) -> Table:
    table = Table(title="Time to next action, same folds (at clip start | every 15 s while it runs)")
    for col in ("range", "MAE s", "baseline MAE s", "coverage", "width s"):
        table.add_column(col, justify="right")
    for (lo, hi), rep in cv.items():
        s, r = rep["start"], rep["refresh"]
        mark = " *" if (lo, hi) == chosen else ""
        table.add_row(
            f"q{lo:g}–q{hi:g}{mark}",
            f"{s.mae_s:.1f} | {r.mae_s:.1f}",
            f"{s.baseline_mae_s:.1f} | {r.baseline_mae_s:.1f}",
            f"{s.coverage:.0%} | {r.coverage:.0%}",
            f"{s.mean_width_s:.0f} | {r.mean_width_s:.0f}",
        )
    return table


def _test_report(
    data: Annotations,
    train: tuple[str, ...],
    model: LearnedModel,
    test: tuple[PlanningSample, ...],
    console: Console,
) -> dict[str, Any]:
    """The fitted model and the two n-gram baselines (fit on the training videos) on the test samples."""
    sequences = data.sequences(train)
    predictors = {
        f"learned ({model.family})": model.raw_probabilities,
        "order-2 Markov (T=1)": _prior_predictor(SequencePrior.fit(sequences, MARKOV2)),
        "n-gram (shipped settings, T=1)": _prior_predictor(SequencePrior.fit(sequences, PriorSettings())),
    }
    rows: list[tuple[str, dict[str, float]]] = [("Paper, Table 1 (best per column)", PAPER_BEST)]
    out: dict[str, Any] = {}
    for name, predict in predictors.items():
        items, conf, ok = [], [], []
        for s in test:
            tl = sample_timeline(s)
            p = predict(tl)
            labels = ranked_labels(p, tl.current)
            items.append(Scored(s.video, s.target, s.next_action, labels))
            conf.append(float(p.max()))
            ok.append(labels[0] == s.target)
        metrics = compute_metrics(items)
        cal = calibration_report(conf, ok)
        rows.append((f"{name}, test", metrics.metrics))
        out[name] = {**metrics.to_dict(), "ece": round(cal.ece, 4), "brier_top1": round(cal.brier, 4)}
        console.print(
            f"{name}: ECE {100 * cal.ece:.1f}%, Brier(top-1) {cal.brier:.3f} on {len(test)} test samples"
        )
    two = []
    for s in test:
        either = model.two_step(sample_timeline(s)).ranked()
        two.append(Scored(s.video, s.target, s.next_action, tuple(a for a, _ in either)))
    two_metrics = compute_metrics(two)
    rows.append(("learned, 'next or the one after' ranking, test", two_metrics.metrics))
    out["learned two-step"] = two_metrics.to_dict()
    console.print(metrics_table(f"Test videos ({len(test)} samples)", rows))
    clips = [(s.nearest, float(s.start_s - s.history_starts[-1])) for s in test
             if s.nearest and len(s.history_starts) == len(s.history)]  # fmt: skip
    if clips and model.time_to_next is not None:
        start = score_time_to_next(model.time_to_next, clips, None)
        refresh = score_time_to_next(model.time_to_next, clips)
        console.print(
            f"time to next on the test samples' current clips: MAE {start.mae_s:.1f} s at clip start "
            f"(baseline {start.baseline_mae_s:.1f}), {refresh.mae_s:.1f} s over refreshes (baseline "
            f"{refresh.baseline_mae_s:.1f}); range holds the switch in {start.coverage:.0%} | "
            f"{refresh.coverage:.0%}"
        )
        out["time_to_next"] = {"start": start.to_dict(), "refresh": refresh.to_dict()}
        all_clips = finished_clips(data, sorted({s.video for s in test}, key=list(data.videos).index))
        out["time_to_next_all_clips"] = score_time_to_next(model.time_to_next, all_clips).to_dict()
    return out


def _prior_predictor(prior: SequencePrior) -> Any:
    return lambda tl: np.array([prior.next_action_scores(tl.labels)[a] for a in ACTIONS])
