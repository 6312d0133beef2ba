"""Calibration of any planner's ranking probabilities, measured the honest way.

From a planner's probabilities on the training videos' samples: a temperature fitted by grouped
CV (each held-out fold scaled with a T fitted on the other folds) gives the CV ECE and Brier,
raw and calibrated; a T fitted on all training samples is what to serve
(``planner.settings.temperature``) and is applied to the evaluated samples for the report.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.actions import ACTIONS
from planner.atomic import atomic_write_bytes
from planner.calibration import CalibrationReport, calibration_report, fit_temperature
from planner.engines.prior_engine import PriorEngine
from planner.memory import NHFMemory
from planner.planner import Planner
from planner.prior import PriorSettings, SequencePrior
from training.cholect50 import Annotations, PlanningSample
from training.evaluate import Prediction, predict
from training.exceptions import TrainingError
from training.sequence_selection import grouped_folds


def probability_matrix(predictions: Sequence[Prediction]) -> np.ndarray:
    """Each prediction's probabilities in canonical action order (from its ranked labels and scores)."""
    out = np.zeros((len(predictions), len(ACTIONS)))
    for i, p in enumerate(predictions):
        if len(p.scores) != len(p.ranked):
            raise TrainingError(f"{p.video}/{p.clip}: a prediction without scores cannot be calibrated")
        for label, score in zip(p.ranked, p.scores, strict=True):
            out[i, ACTIONS.index(label)] = score
    return out


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logs = np.log(np.clip(probs, 0.0, None)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    out = np.exp(logs)
    return np.asarray(out / out.sum(axis=1, keepdims=True))


def report_for(probs: np.ndarray, targets: np.ndarray) -> CalibrationReport:
    return calibration_report(probs.max(axis=1), probs.argmax(axis=1) == targets)


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float  # fitted on all training samples: what to serve
    cv_raw: CalibrationReport  # training samples, held-out folds, as served
    cv_calibrated: CalibrationReport  # the same, each fold scaled by a T fitted on the others
    fold_temperatures: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "fold_temperatures": list(self.fold_temperatures),
            "cv_raw": self.cv_raw.to_dict(),
            "cv_calibrated": self.cv_calibrated.to_dict(),
        }


def cross_validated_temperature(
    train_predictions: Sequence[Prediction], train_samples: Sequence[PlanningSample], n_folds: int = 5
) -> CalibrationResult:
    probs = probability_matrix(train_predictions)
    targets = np.array([ACTIONS.index(s.target) for s in train_samples])
    videos = sorted({s.video for s in train_samples})
    by_video = np.array([s.video for s in train_samples])
    calibrated = np.zeros_like(probs)
    temps = []
    for held in grouped_folds(videos, n_folds, 0):
        mask = np.isin(by_video, held)
        if mask.all() or not mask.any():
            continue
        t = fit_temperature(probs[~mask], targets[~mask])
        temps.append(t)
        calibrated[mask] = scaled(probs[mask], t)
    return CalibrationResult(
        temperature=fit_temperature(probs, targets),
        cv_raw=report_for(probs, targets),
        cv_calibrated=report_for(calibrated, targets),
        fold_temperatures=tuple(temps),
    )


def prior_oof_predictions(
    data: Annotations,
    train_samples: Sequence[PlanningSample],
    settings: PriorSettings,
    memory_factory: Callable[[PlanningSample], NHFMemory],
    n_folds: int = 5,
) -> list[Prediction]:
    """The n-gram prior's predictions for the training samples, each from a prior fit on the other
    folds' videos (a prior fit on all training videos would be scored in-sample), in sample order."""
    videos = sorted({s.video for s in train_samples}, key=list(data.videos).index)
    by_key: dict[tuple[str, str], Prediction] = {}
    for held in grouped_folds(videos, n_folds, 0):
        fold_prior = SequencePrior.fit(data.sequences([v for v in videos if v not in held]), settings)
        planner = Planner(PriorEngine(fold_prior), fold_prior, sequence_model=None)
        held_samples = [s for s in train_samples if s.video in held]
        for p in predict(planner, held_samples, memory_factory=memory_factory):
            by_key[(p.video, p.clip)] = p
    return [by_key[s.key] for s in train_samples]


def plot_reliability(rows: Sequence[tuple[str, CalibrationReport]], path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per row; written atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TrainingError("--plot needs matplotlib (pip install 'llm-sap[models]')") from None
    fig = Figure(figsize=(5.2, 5.0), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    for i, (label, rep) in enumerate(rows):
        used = [b for b in rep.bins if b.count]
        ax.plot([b.confidence for b in used], [b.accuracy for b in used], "o-", color=f"C{i}",
                label=f"{label} (ECE {100 * rep.ece:.1f}%, Brier {rep.brier:.3f})")  # fmt: skip
        for b in used:
            ax.annotate(str(b.count), (b.confidence, b.accuracy), fontsize=6, xytext=(3, -8),
                        textcoords="offset points", color=f"C{i}")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 probability (bin mean)")
    ax.set_ylabel("share right")
    ax.set_title("Reliability of the top-1 probability (10 bins; n per point)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
