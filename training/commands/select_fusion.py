"""``llm-sap select-fusion``: choose λ for log p_engine + λ log p_prior by CV on training videos."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from planner.atomic import atomic_write_json
from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.engines import create_engine
from planner.outputs import check_outputs
from training.cholect50 import load_annotations
from training.config import AppConfig
from training.evaluate import PAPER_BEST, score
from training.exceptions import UsageError
from training.fusion_selection import DEFAULT_LAMBDAS, fused_ranking, score_engine, select_fusion_weight
from training.metrics import metric_keys
from training.prior_selection import SELECTION_KEYS, fit_final
from training.splits import load_split
from training.tables import metrics_table, progress_bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    add_planner_arguments(p, required=True)
    p.add_argument(
        "--weights", help=f"comma-separated λ values (default {','.join(map(str, DEFAULT_LAMBDAS))})"
    )
    p.add_argument("--json", type=Path, dest="json_out", help="write the CV and test metrics as JSON")
    p.add_argument("--split-file", type=Path, help='{"train": [...], "test": [...]} (default: the paper\'s)')


def grid_edge_warning(best: float, weights: tuple[float, ...]) -> str | None:
    """A warning when the chosen λ is the smallest or largest one tried: the best may lie beyond."""
    if len(set(weights)) < 2 or min(weights) < best < max(weights):
        return None
    side, way = ("largest", "larger") if best == max(weights) else ("smallest", "smaller")
    return (
        f"warning: λ={best:g} is the {side} weight tried; the best may be {way}: "
        f"widen --weights and run again"
    )


def overrides(args: argparse.Namespace) -> list[str]:
    return flag_overrides(args, PLANNER_FLAGS)


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs({"--json": args.json_out}, inputs=[args.annotations, args.split_file])
    if cfg.planner.partner != "prior":  # the prior is refit per fold; a learned model is not
        raise UsageError(
            f"select-fusion chooses λ for the n-gram partner (planner.partner = prior), not "
            f"{cfg.planner.partner!r}: compare weights with evaluate --compare "
            "'NAME=ENGINE+prior:WEIGHT' rows under --set planner.partner=..."
        )
    weights = DEFAULT_LAMBDAS
    if args.weights:
        try:
            weights = tuple(float(w) for w in args.weights.split(","))
        except ValueError:
            raise UsageError(f"--weights must be comma-separated numbers, got {args.weights!r}") from None
    data = load_annotations(args.annotations)
    split = load_split(args.split_file, data)
    prior = fit_final(data, cfg.planner.prior, split.train)
    engine = create_engine(cfg.planner.engine, prior, cfg.planner.engine_settings)
    test = split.samples(data, "test")
    try:
        samples = split.samples(data, "train") + test
        with progress_bar(
            f"scoring {len(samples)} samples with {engine.name}", len(samples), console
        ) as update:
            scores = score_engine(samples, engine.rank, on_progress=update)
    finally:
        engine.close()
    results = select_fusion_weight(
        data, scores, cfg.planner.prior, weights, cfg.training.cv_folds, train_videos=split.train
    )
    table = Table(title=f"λ by leave-one-video-out CV on {len(split.train)} training videos (%)")
    table.add_column("λ", justify="right")
    for key in SELECTION_KEYS:
        table.add_column(key, justify="right")
    for r in sorted(results, key=lambda r: r.weight):
        table.add_row(f"{r.weight:g}", *(f"{v:.2f}" for v in r.key()))
    console.print(table)
    best = results[0].weight
    rows = [("Paper, Table 1 (best per column)", PAPER_BEST)]
    test_reports = {}
    for name, w in (("engine alone (λ=0)", 0.0), (f"engine + prior (λ={best:g})", best)) if test else ():
        ranked = {s.key: fused_ranking(scores[s.key], prior, s, w) for s in test}
        test_reports[name] = score(test, ranked)
        rows.append((f"{name}, test", test_reports[name].metrics))
    console.print(metrics_table(f"{engine.name}: {engine.model} — test split", rows))
    edge = grid_edge_warning(best, weights)
    if edge:
        console.print(edge, style="yellow", markup=False)
    console.print(f"set it with: --set planner.settings.fusion_weight={best:g}")
    if args.json_out:
        atomic_write_json(
            args.json_out,
            {
                "engine": f"{engine.name}: {engine.model}",
                "winner": best,
                "winner_on_grid_edge": edge is not None,
                "cv": [
                    {"weight": r.weight, "metrics": {k: r.report.metrics[k] for k in metric_keys()}}
                    for r in results
                ],
                "test": {name: rep.to_dict() for name, rep in test_reports.items()},
            },
        )
    return 0
