"""``llm-sap select-prior``: choose the prior's settings by cross-validation on training videos."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from planner.atomic import atomic_write_json
from planner.outputs import check_outputs
from training.cholect50 import load_annotations
from training.config import AppConfig
from training.evaluate import PAPER_BEST, score
from training.metrics import metric_keys
from training.prior_selection import SELECTION_KEYS, default_grid, fit_final, rank_with_prior, select_prior
from training.splits import load_split
from training.tables import metrics_table, progress_bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, required=True, help="CholecT50-SAP total_video_info.json")
    p.add_argument(
        "--folds", type=int, help="cross-validation folds over training videos (0 = leave one out)"
    )
    p.add_argument("--split-file", type=Path, help='{"train": [...], "test": [...]} (default: the paper\'s)')
    p.add_argument("--top", type=int, default=10, help="how many settings to list (default 10)")
    p.add_argument("--out", type=Path, help="write the winning prior, fit on all training videos, as JSON")
    p.add_argument("--json", type=Path, dest="json_out", help="write every setting's CV metrics as JSON")


def overrides(args: argparse.Namespace) -> list[str]:
    return [f"training.cv_folds={args.folds}"] if args.folds is not None else []


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    check_outputs({"--out": args.out, "--json": args.json_out}, inputs=[args.annotations, args.split_file])
    data = load_annotations(args.annotations)
    split = load_split(args.split_file, data)
    grid = default_grid()
    n_folds = cfg.training.cv_folds
    with progress_bar(f"cross-validating {len(grid)} settings", len(grid), console) as update:
        results = select_prior(data, grid, n_folds, on_progress=update, train_videos=split.train)
    folds = "leave-one-video-out" if n_folds == 0 else f"{n_folds}-fold"
    table = Table(title=f"Prior settings, {folds} CV on {len(split.train)} training videos (%)")
    table.add_column("#", justify="right")
    table.add_column("settings")
    for key in SELECTION_KEYS:
        table.add_column(key, justify="right")
    for i, r in enumerate(results[: args.top], 1):
        table.add_row(str(i), r.settings.describe(), *(f"{v:.2f}" for v in r.key()))
    console.print(table)
    winner = results[0]
    prior = fit_final(data, winner.settings, split.train)
    test = split.samples(data, "test")
    test_report = score(test, {s.key: rank_with_prior(prior, s) for s in test}) if test else None
    rows = [
        ("Paper, Table 1 (best per column)", PAPER_BEST),
        (f"prior CV on train ({winner.report.samples} samples)", winner.report.metrics),
    ]
    if test_report is not None:
        rows.append((f"prior on test ({test_report.samples} samples)", test_report.metrics))
    console.print(metrics_table(f"Winner: {winner.settings.describe()}", rows))
    if args.out:
        prior.save(args.out)
        console.print(f"wrote {args.out}")
    if args.json_out:
        atomic_write_json(
            args.json_out,
            {
                "folds": folds,
                "selection_keys": list(SELECTION_KEYS),
                "winner": winner.settings.describe(),
                "test": test_report.to_dict() if test_report else None,
                "cv": [
                    {
                        "settings": r.settings.describe(),
                        "metrics": {k: r.report.metrics[k] for k in metric_keys()},
                    }
                    for r in results
                ],
            },
        )
    return 0
