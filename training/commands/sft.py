"""``llm-sap sft --config FILE [--set training.sft.KEY=VALUE] [--resume]``: LoRA SFT on distilled chats."""

from __future__ import annotations

import argparse

from rich.console import Console

from training.commands.recipe_keys import check_required, keys_epilog
from training.config import AppConfig
from training.recipes import SftConfig

REQUIRED = ("model", "data", "output_dir")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.epilog = keys_epilog(SftConfig, "training.sft", REQUIRED, "configs/sft-tiny.toml")


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    recipe = cfg.training.sft
    check_required(recipe, "training.sft", REQUIRED)  # before torch and TRL are imported
    from training.sft import run_sft

    result = run_sft(recipe, resume=args.resume)
    first = f"{result.losses[0]:.3f}" if result.losses else "-"
    last = f"{result.losses[-1]:.3f}" if result.losses else "-"
    console.print(
        f"SFT: {result.steps} steps on {result.examples} examples in {result.seconds:.1f} s; "
        f"loss {first} -> {last}; adapter in {result.output_dir}",
        markup=False,
    )
    console.print(
        f"use it with: --planner transformers:{recipe.model} --adapter {result.output_dir}", markup=False
    )
    return 0
