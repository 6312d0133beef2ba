"""Benchmark: option ranking on the cached knowledge-base prefix vs. a full forward, and rationale speed.

    python -m training.benchmarks.engines [--size tiny|0.5b] [--dtype float32|bfloat16]
        [--model DIR] [--json OUT]

Without ``--model`` a random-weight checkpoint of the given size is built in a temporary folder
with ``training.tiny_models`` (a developer tool's borrowing: no ``planner`` module imports
``training`` at run time). The prompt is the real one: system message (role + knowledge base) and
the option-scoring question; both timings come from the same run, on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.engines.base import EngineSettings
from planner.logs import configure_logging
from planner.memory import NHFMemory
from planner.prior import packaged_prior
from planner.prompts import APPrompts

MEMORY = NHFMemory.from_history(
    ["Tissue Retraction", "Dissection", "Coagulation", "Dissection"],
    "Vessel Clipping",
    caption="A clip applier closes a clip across the cystic artery; the gallbladder is retracted upward.",
)


def _interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds per call; the cases take turns, so a busy machine slows them all alike."""
    for fn in cases.values():
        fn()  # warm-up
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def run_bench(
    model_dir: str, dtype: str, repeats: int, gen_tokens: int, threads: int | None, orders: int
) -> dict[str, Any]:
    from planner.engines.transformers_engine import TransformersEngine, create

    settings = EngineSettings(dtype=dtype, threads=threads, max_new_tokens=gen_tokens)  # type: ignore[arg-type]
    engine: TransformersEngine = create(model_dir, packaged_prior(), settings)
    lm = engine.lm
    suffix = lm.encode(APPrompts.options(MEMORY).messages).ids.numel() - lm.prefix_len
    cases: dict[str, Callable[[], Any]] = {
        "full forward": lambda: engine.rank(MEMORY, use_cache=False),
        "cached prefix": lambda: engine.rank(MEMORY),
    }
    if orders > 1:
        batched = TransformersEngine(lm, replace(settings, option_orders=orders))
        cases[f"full forward, {orders} orders batched"] = lambda: batched.rank(MEMORY, use_cache=False)
        cases[f"cached prefix, {orders} orders batched"] = lambda: batched.rank(MEMORY)
    load_before = os.getloadavg()[0]
    results = _interleaved(cases, repeats)
    cached, full = engine.rank(MEMORY), engine.rank(MEMORY, use_cache=False)
    diff = max(abs(cached[a] - full[a]) for a in cached)
    t0 = time.perf_counter()
    text = "".join(engine.generate(MEMORY, gen_tokens))
    gen_s = time.perf_counter() - t0
    medians = {k: statistics.median(v) for k, v in results.items()}
    speedups = {"single prompt": medians["full forward"] / medians["cached prefix"]}
    if orders > 1:
        speedups[f"{orders} orders batched"] = (
            medians[f"full forward, {orders} orders batched"]
            / medians[f"cached prefix, {orders} orders batched"]
        )
    return {
        "model": model_dir,
        "params": sum(p.numel() for p in lm.model.parameters()),
        "dtype": dtype,
        "threads": torch_threads(),
        "prefix_tokens": lm.prefix_len,
        "suffix_tokens": suffix,
        "repeats": repeats,
        "median_ms": medians,
        "min_ms": {k: min(v) for k, v in results.items()},
        "max_ms": {k: max(v) for k, v in results.items()},
        "speedup": speedups,
        "max_abs_diff_cached_vs_full": diff,
        "rationale_tokens": engine.last_generated_tokens,
        "rationale_tokens_per_s": engine.last_generated_tokens / gen_s if gen_s > 0 else 0.0,
        "rationale_chars": len(text),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other work on the CPUs
    }


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def print_table(r: dict[str, Any]) -> None:
    print(
        f"model {r['model']} ({r['params'] / 1e6:.1f}M params, {r['dtype']}, {r['threads']} threads); "
        f"prefix {r['prefix_tokens']} tokens, scoring suffix {r['suffix_tokens']} tokens, {r['repeats']} runs"
    )
    print(f"{'ranking':<34}{'median ms':>12}{'min ms':>12}{'max ms':>12}")
    for name, median in r["median_ms"].items():
        print(f"{name:<34}{median:>12.1f}{r['min_ms'][name]:>12.1f}{r['max_ms'][name]:>12.1f}")
    for name, ratio in r["speedup"].items():
        print(f"speed-up, cached prefix vs full forward ({name}): {ratio:.1f}x")
    print(f"max |cached - full| log-score: {r['max_abs_diff_cached_vs_full']:.2e}")
    print(f"1-minute load average before / after: {r['load_average_1m'][0]} / {r['load_average_1m'][1]}")
    print(
        f"rationale: {r['rationale_tokens']} tokens at {r['rationale_tokens_per_s']:.1f} tokens/s "
        "(greedy, on the cached prefix)"
    )


def _hidden_size(model_dir: str) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config.get("hidden_size") or config.get("text_config", {}).get("hidden_size", 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.benchmarks.engines", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--size", choices=("tiny", "0.5b"), default="tiny", help="model to build (without --model)"
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--model", help="bench this checkpoint folder instead of building one")
    p.add_argument("--repeats", type=int, default=0, help="timed runs per case (default: 30 tiny, 5 0.5b)")
    p.add_argument("--gen-tokens", type=int, default=0, help="rationale tokens (default: 64 tiny, 16 0.5b)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--orders", type=int, default=0, help="also time N letter orders batched (default: 4 tiny, none 0.5b)"
    )
    p.add_argument("--json", type=Path, dest="json_out", help="write the figures as JSON")
    args = p.parse_args(argv)
    configure_logging("console", "warning")  # the numbers, not other libraries' warnings and bars
    tiny = args.size == "tiny" if args.model is None else _hidden_size(args.model) < 512
    repeats = args.repeats or (30 if tiny else 5)
    gen_tokens = args.gen_tokens or (64 if tiny else 16)
    orders = args.orders or (4 if tiny else 1)
    with tempfile.TemporaryDirectory(prefix="llm-sap-bench-") as tmp:
        model_dir = args.model
        if model_dir is None:
            from training.tiny_models import build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / args.size, size=args.size))
        result = run_bench(model_dir, args.dtype, repeats, gen_tokens, args.threads, orders)
    result["size"] = args.size if args.model is None else ("tiny" if tiny else "large")
    print_table(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
