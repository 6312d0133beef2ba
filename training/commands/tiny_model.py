"""``llm-sap tiny-model OUT_DIR [--vl] [--size tiny|0.5b]``: a random Qwen2 / Qwen2-VL built locally."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from training.config import AppConfig
from training.exceptions import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="folder to write the checkpoint to (created)")
    p.add_argument("--vl", action="store_true", help="a Qwen2-VL model (with an image processor)")
    p.add_argument(
        "--size",
        choices=("tiny", "0.5b"),
        default="tiny",
        help="tiny (hidden 64, 2 layers; default) or 0.5b (Qwen2.5-0.5B shape, for benchmarks)",
    )
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    from training.tiny_models import build_tiny_model

    out: Path = args.out_dir
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if out.is_dir() and (out / "config.json").exists():
        raise UsageError(f"{out} already holds a checkpoint (config.json); choose an empty folder")
    path = build_tiny_model(out, vl=args.vl, size=args.size, seed=args.seed)
    kind = "Qwen2-VL" if args.vl else "Qwen2"
    console.print(f"wrote a {args.size} random {kind} checkpoint to {path}")
    console.print(f"use it with: --planner transformers:{path}", markup=False)
    return 0
