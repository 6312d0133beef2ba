"""``llm-sap merge --base PATH --adapter DIR --out DIR``: a merged checkpoint for TensorRT-LLM / vLLM."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from training.config import AppConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", type=Path, required=True, help="the base checkpoint folder")
    p.add_argument("--adapter", type=Path, required=True, help="the LoRA adapter folder (sft or grpo)")
    p.add_argument("--out", type=Path, required=True, help="a new folder for the merged checkpoint")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights' dtype while merging and in the output (default float32)")  # fmt: skip
    p.add_argument("--tolerance", type=float, help="max abs logit difference allowed (default by dtype)")


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def run(cfg: AppConfig, args: argparse.Namespace, console: Console) -> int:
    from training.merge import merge_adapter

    result = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype, tolerance=args.tolerance)
    console.print(
        f"merged {args.adapter} into {args.base} -> {result.out} in {result.seconds:.1f} s; probe prompt "
        f"({result.probe_tokens} tokens): max |logit diff| vs base + adapter = {result.max_abs_diff:.3g} "
        f"over all positions, {result.max_abs_diff_next:.3g} at the next token "
        f"(tolerance {result.tolerance:g})",
        markup=False,
    )
    return 0
