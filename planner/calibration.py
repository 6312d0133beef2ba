"""Calibration of ranking probabilities: temperature scaling, ECE and the Brier score of the top-1.

Temperature scaling divides log-probabilities by T and renormalises: T > 1 softens an
over-confident ranking, T < 1 sharpens an under-confident one; the order never changes, so the
accuracy metrics are untouched. T is fitted by minimising the negative log-likelihood of the
true labels (a bounded 1-D search; no optimiser needed), always on out-of-fold probabilities.

- ECE (expected calibration error, 10 equal-width bins of top-1 confidence): the sample-weighted
  mean |accuracy - confidence| over bins, in [0, 1].
- Brier (top-1): the mean of (confidence - correct)^2 over samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ECE_BINS = 10
T_MIN, T_MAX = 0.05, 20.0


def apply_temperature(probs: Mapping[str, float], temperature: float) -> dict[str, float]:
    """p_i^(1/T) renormalised; zero stays zero (the current action)."""
    if temperature <= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    logs = {a: math.log(p) / temperature for a, p in probs.items() if p > 0}
    if not logs:
        return dict(probs)
    top = max(logs.values())
    exp = {a: math.exp(v - top) for a, v in logs.items()}
    total = sum(exp.values())
    return {a: (exp[a] / total if a in exp else 0.0) for a in probs}


def _scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logs = np.log(probs) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    exp = np.exp(logs)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def nll(probs: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``targets`` (column indices) under temperature-scaled ``probs``."""
    p = _scaled(probs, temperature)[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(
    probs: Sequence[Sequence[float]] | np.ndarray, targets: Sequence[int] | np.ndarray
) -> float:
    """The T in [T_MIN, T_MAX] minimising the NLL (golden-section search on log T; NLL is convex in 1/T)."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(targets, dtype=int)
    if p.ndim != 2 or len(p) != len(y) or not len(y):
        raise ValueError("need one probability row per target, at least one")
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(p, y, math.exp(a)), nll(p, y, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(p, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(p, y, math.exp(b))
    return round(math.exp((lo + hi) / 2), 4)


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean top-1 probability in the bin (0 when empty)
    accuracy: float  # share right in the bin (0 when empty)


@dataclass(frozen=True)
class CalibrationReport:
    samples: int
    ece: float  # in [0, 1]
    brier: float  # top-1 Brier score in [0, 1]
    mean_confidence: float
    accuracy: float
    bins: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "ece": round(self.ece, 4),
            "brier_top1": round(self.brier, 4),
            "mean_confidence": round(self.mean_confidence, 4),
            "accuracy": round(self.accuracy, 4),
            "bins": [
                {
                    "low": b.low,
                    "high": b.high,
                    "count": b.count,
                    "confidence": round(b.confidence, 4),
                    "accuracy": round(b.accuracy, 4),
                }
                for b in self.bins
            ],
        }


def calibration_report(
    confidences: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, n_bins: int = ECE_BINS
) -> CalibrationReport:
    """ECE over ``n_bins`` equal-width bins and the top-1 Brier score."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if not len(conf) or len(conf) != len(ok):
        raise ValueError("need one correctness flag per confidence, at least one")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    ece = 0.0
    for i in range(n_bins):
        mask = which == i
        n = int(mask.sum())
        c = float(conf[mask].mean()) if n else 0.0
        acc = float(ok[mask].mean()) if n else 0.0
        ece += n / len(conf) * abs(acc - c)
        bins.append(ReliabilityBin(float(edges[i]), float(edges[i + 1]), n, c, acc))
    return CalibrationReport(
        samples=len(conf),
        ece=ece,
        brier=float(((conf - ok) ** 2).mean()),
        mean_confidence=float(conf.mean()),
        accuracy=float(ok.mean()),
        bins=tuple(bins),
    )
