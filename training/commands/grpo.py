"""``llm-sap grpo --config FILE [--set training.grpo.KEY=VALUE] [--resume]``: GRPO from the SFT adapter."""

from __future__ import annotations

import argparse

from rich.console import Console

from training.commands.recipe_keys import check_required, keys_epilog
from training.config import AppConfig
from training.recipes import GrpoConfig

REQUIRED = ("model", "sft_adapter", "data|annotations", "output_dir")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.epilog = keys_epilog(GrpoConfig, "training.grpo", REQUIRED, "configs/grpo-tiny.toml")


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def _span(values: list[float], fmt: str = ".3f") -> str:
    return f"{values[0]:{fmt}} -> {values[-1]:{fmt}}" if values else "-"


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    recipe = cfg.training.grpo
    check_required(recipe, "training.grpo", REQUIRED)  # before torch and TRL are imported
    from training.grpo import run_grpo

    result = run_grpo(recipe, resume=args.resume)
    console.print(
        f"GRPO: {result.steps} steps in {result.seconds:.1f} s; reward {_span(result.rewards)} "
        f"(format {_span(result.format_rewards)}, correctness {_span(result.correctness_rewards)}); "
        f"KL {_span(result.kl, '.3g')}; adapter in {result.output_dir}",
        markup=False,
    )
    console.print(
        f"use it with: --planner transformers:{recipe.model} --adapter {result.output_dir}", markup=False
    )
    return 0
