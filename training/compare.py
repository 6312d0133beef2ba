"""Several planners on the same samples: one table beside the paper's best, JSON, and a bar chart.

A row is named on the command line as ``NAME=ENGINE[:ARG][@ADAPTER][+prior[:WEIGHT]]``:

- ``prior=prior`` — the fitted n-gram prior alone (``prior:FILE`` for a saved one);
- ``zero-shot=transformers:/models/qwen`` — a model engine, no adapter, not fused (weight 0);
- ``sft=transformers:/models/qwen@out/sft`` — with a LoRA adapter folder;
- ``sft+prior=transformers:/models/qwen@out/sft+prior`` — fused with the prior at the configured
  ``planner.settings.fusion_weight``; ``+prior:0.5`` gives the weight explicitly.

The adapter is what follows the last ``@`` (a URL with a user name needs the config's adapter
instead). Parsing and the JSON are pure; building planners, predicting and plotting do the IO.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from planner.atomic import atomic_write_bytes
from planner.engines import available_engines, create_engine
from planner.partner import build_partner
from planner.planner import Planner
from planner.prior import SequencePrior
from training.cholect50 import PlanningSample
from training.config import AppConfig
from training.evaluate import PAPER_BEST, predict, refuse_learned_on_its_training_videos, score
from training.exceptions import TrainingError, UsageError
from training.metrics import METRIC_NAMES, TOP_K, MetricReport

log = structlog.get_logger(__name__)

_SPEC = re.compile(r"(?P<body>.*?)(?P<fused>\+prior(?::(?P<weight>[^:@+]*))?)?")
PAPER_LABEL = "Paper, Table 1 (best per column)"


@dataclass(frozen=True)
class CompareSpec:
    name: str
    engine: str  # an engine spec for planner.engines.create_engine: NAME or NAME:ARG
    adapter: str | None = None
    fused: bool = False  # fused with the prior
    weight: float | None = None  # the fusion weight when fused; None: the configured one

    def fusion_weight(self, configured: float) -> float:
        if not self.fused:
            return 0.0
        return configured if self.weight is None else self.weight


def parse_compare_spec(text: str) -> CompareSpec:
    """``NAME=ENGINE[:ARG][@ADAPTER][+prior[:WEIGHT]]``; a UsageError names what is wrong."""
    where = f"--compare {text!r}"
    name, sep, rest = text.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not name or not rest:
        raise UsageError(
            f"{where}: expected NAME=ENGINE[:ARG][@ADAPTER][+prior[:WEIGHT]], "
            "e.g. sft=transformers:/m@out/sft"
        )
    match = _SPEC.fullmatch(rest)
    assert match is not None  # every string matches: the body takes what the suffix does not
    body, fused, weight_text = match["body"], bool(match["fused"]), match["weight"]
    engine, at, adapter = body.rpartition("@") if "@" in body else (body, "", "")
    engine_name = engine.partition(":")[0]
    if not engine_name:
        raise UsageError(f"{where}: no engine before {'@' if at else '+prior'}")
    if engine_name not in available_engines():
        raise UsageError(
            f"{where}: engine {engine_name!r} is unknown (known: {', '.join(available_engines())})"
        )
    if at and not adapter:
        raise UsageError(f"{where}: '@' must be followed by an adapter folder")
    if engine_name == "prior" and (at or fused):
        raise UsageError(f"{where}: the prior engine takes no adapter and is not fused with itself")
    if engine_name == "learned" and (at or fused):
        raise UsageError(f"{where}: the learned planner takes no adapter and is not fused (it ranks alone)")
    weight = None
    if weight_text is not None:
        try:
            weight = float(weight_text)
        except ValueError:
            raise UsageError(f"{where}: fusion weight {weight_text!r} is not a number") from None
        if not weight >= 0:
            raise UsageError(f"{where}: fusion weight must be >= 0, got {weight_text}")
    return CompareSpec(name, engine, adapter or None, fused, weight)


def parse_compare_specs(texts: Sequence[str]) -> list[CompareSpec]:
    specs = [parse_compare_spec(t) for t in texts]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"--compare: the name {dupes[0]!r} is used twice; give each row its own name")
    return specs


@dataclass(frozen=True)
class CompareRow:
    spec: CompareSpec
    engine: str
    model: str
    fusion_weight: float
    report: MetricReport
    degraded: int  # samples the engine failed or missed its deadline on (ranked by the prior)
    seconds: float

    @property
    def label(self) -> str:
        """``name (engine[ file][ + adapter][ + prior λ=w])`` for the table and the plot's legend."""
        arg = self.spec.engine.partition(":")[2]
        parts = [self.engine + (f" {Path(arg).name}" if arg else "")]
        if self.spec.adapter:
            parts.append(Path(self.spec.adapter).name)
        if self.fusion_weight:
            parts.append(f"prior λ={self.fusion_weight:g}")
        return f"{self.spec.name} ({' + '.join(parts)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "engine_spec": self.spec.engine,
            "engine": self.engine,
            "model": self.model,
            "adapter": self.spec.adapter,
            "fusion_weight": self.fusion_weight,
            "degraded": self.degraded,
            "seconds": self.seconds,
            "metrics": dict(self.report.metrics),
        }


def planner_for(cfg: AppConfig, prior: SequencePrior, spec: CompareSpec) -> Planner:
    """The configured planner with this row's engine, adapter (None: none) and fusion weight.

    A ``prior:FILE`` row plans with that file's prior: the Planner ranks inline with its own
    prior when the engine is the prior, so it gets the engine's."""
    engine_settings = replace(cfg.planner.engine_settings, adapter=spec.adapter)
    engine = create_engine(spec.engine, prior, engine_settings)
    if engine.name == "prior":
        prior = getattr(engine, "prior", prior)
    weight = spec.fusion_weight(cfg.planner.settings.fusion_weight)
    settings = replace(cfg.planner.settings, fusion_weight=weight)
    return Planner(engine, prior, settings, partner=build_partner(cfg.planner.partner, prior))


def evaluate_specs(
    cfg: AppConfig,
    prior: SequencePrior,
    specs: Sequence[CompareSpec],
    samples: Sequence[PlanningSample],
    progress: Callable[[str, int], Any],
) -> list[CompareRow]:
    """Each row's predictions and metrics. ``progress(description, total)`` is a context manager
    yielding ``update(done)`` (``training.tables.progress_bar`` with its console bound)."""
    for spec in specs:  # before any row runs: a learned row never scores its own training videos
        if spec.engine.partition(":")[0] == "learned":
            refuse_learned_on_its_training_videos(create_engine(spec.engine, prior), samples)
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        planner = planner_for(cfg, prior, spec)
        try:
            with progress(f"{spec.name} ({planner.engine.name})", len(samples)) as update:
                predictions = predict(planner, samples, on_progress=update)
        finally:
            planner.close()
        report = score(samples, {(p.video, p.clip): p.ranked for p in predictions})
        row = CompareRow(
            spec=spec,
            engine=planner.engine.name,
            model=planner.engine.model,
            fusion_weight=planner.settings.fusion_weight,
            report=report,
            degraded=sum(p.degraded for p in predictions),
            seconds=round(time.perf_counter() - t0, 2),
        )
        log.info("compare.row", name=spec.name, engine=row.engine, slacc1=report.metrics["SLAcc@1"],
                 degraded=row.degraded, seconds=row.seconds)  # fmt: skip
        rows.append(row)
    return rows


def comparison_json(rows: Sequence[CompareRow], split: str) -> dict[str, Any]:
    first = rows[0].report
    return {
        "split": split,
        "samples": first.samples,
        "relaxed_samples": first.relaxed_samples,
        "videos": first.videos,
        "paper_best": dict(PAPER_BEST),
        "rows": [r.to_dict() for r in rows],
    }


# ---- the plot ---------------------------------------------------------------------------------------
def plot_metrics(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    path: Path,
    *,
    title: str = "CholecT50-SAP next-action planning",
    reference: Mapping[str, float] = PAPER_BEST,
    reference_label: str = "paper's best (Table 1)",
) -> None:
    """Grouped bars: one panel per metric (SLAcc, VLAcc, ReSLAcc, ReVLAcc), top-1/2/3 groups, one bar
    per planner, the reference as a dashed line over each group. Written atomically as a PNG."""
    fig = metrics_figure(rows, title=title, reference=reference, reference_label=reference_label)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def metrics_figure(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    *,
    title: str = "CholecT50-SAP next-action planning",
    reference: Mapping[str, float] = PAPER_BEST,
    reference_label: str = "paper's best (Table 1)",
) -> Any:
    """The matplotlib Figure of :func:`plot_metrics` (Agg canvas attached)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TrainingError("--plot needs matplotlib (pip install 'llm-sap[models]')") from None
    if not rows:
        raise ValueError("nothing to plot")
    n = len(rows)
    width = 0.8 / n
    fig = Figure(figsize=(12, 7.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharey=True)
    colours = [f"C{i % 10}" for i in range(n)]
    upright = n > 3  # narrow bars: value labels stand upright above them so neighbours never overlap
    for ax, metric in zip(axes.flat, METRIC_NAMES, strict=True):
        for i, (label, metrics) in enumerate(rows):
            xs = [k - 1 - 0.4 + width * (i + 0.5) for k in TOP_K]
            values = [metrics.get(f"{metric}@{k}", 0.0) for k in TOP_K]
            bars = ax.bar(xs, values, width * 0.92, color=colours[i], label=label)
            if n <= 6:
                labels = ax.bar_label(
                    bars, fmt="%.1f", fontsize=7, padding=1.5, zorder=4, rotation=90 if upright else 0
                )
                for text in labels:  # stays legible where a reference line crosses it
                    text.set_bbox({"boxstyle": "square,pad=0.08", "facecolor": "white", "edgecolor": "none",
                                   "alpha": 0.85})  # fmt: skip
        for k in TOP_K:
            ref = reference.get(f"{metric}@{k}")
            if ref is not None:
                ax.hlines(ref, k - 1 - 0.45, k - 1 + 0.45, colors="black", linestyles="--", linewidth=1.4,
                          zorder=3, label=reference_label if k == 1 else None)  # fmt: skip
        ax.set_title(metric + (" (relaxed: target or next clip's action)" if metric.startswith("Re") else ""))
        ax.set_xticks(range(len(TOP_K)), [f"top-{k}" for k in TOP_K])
        ax.set_ylim(0, 118 if upright else 108)
        ax.set_yticks(range(0, 101, 20))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    # as many columns as the longest name lets fit across the figure (never cut off at its edges)
    ncols = max(1, min(4, n + 1, 120 // (max(len(label) for label in labels) + 8)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=9, frameon=False)
    fig.suptitle(title)
    return fig
