"""The learned sequence planner at run time: a multinomial logistic regression over labels and time
features (``planner.sequence_features``), its calibration temperature, the time-to-next model,
and the two-step "next or the one after" ranking. Pure numpy; no scikit-learn at run time.

The model is fitted offline (``training.sequence_selection``, ``llm-sap fit-learned``) and
persisted as JSON: coefficients, intercepts, feature names and scaling, settings, training
videos, the CV figures, and a format version. Loading checks all of it and raises
``LearnedModelError`` naming the problem (the CLI maps it to exit 2).

P(next = a) = softmax((W · z + b) / T) with the current action removed and the rest
renormalised (consecutive clips never share a label); z = standardised features, unknown
times = 0 (the training mean).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from planner.actions import ACTIONS
from planner.atomic import atomic_write_text
from planner.exceptions import LearnedModelError
from planner.sequence_features import FEATURE_NAMES, FEATURE_VERSION, Timeline, features
from planner.time_to_next import DurationModel, NextIn

FORMAT = "llm-sap-learned-planner"
FORMAT_VERSION = 1
_REQUIRED = ("format", "version", "feature_version", "family", "actions", "features", "mean", "scale",
             "coef", "intercept", "temperature", "settings", "trained_on", "time_to_next", "cv")  # fmt: skip


@dataclass(frozen=True)
class TwoStep:
    """The "next or the one after" view: P(a in {a_{t+1}, a_{t+2}}) per action, and the likeliest pair."""

    either: dict[str, float]  # P(a_{t+1} = a) + P(a_{t+2} = a); sums to 2
    best_pair: tuple[str, str]
    best_pair_p: float

    def ranked(self) -> list[tuple[str, float]]:
        """Actions best first by P(next or the one after), ties in canonical order."""
        return sorted(self.either.items(), key=lambda kv: (-kv[1], ACTIONS.index(kv[0])))


@dataclass(frozen=True)
class LearnedModel:
    coef: np.ndarray  # (5, F)
    intercept: np.ndarray  # (5,)
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    temperature: float = 1.0
    time_to_next: DurationModel | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    trained_on: tuple[str, ...] = ()
    cv: Mapping[str, Any] = field(default_factory=dict)
    family: str = "logistic_regression"

    def __post_init__(self) -> None:
        n = len(FEATURE_NAMES)
        if self.coef.shape != (len(ACTIONS), n) or self.intercept.shape != (len(ACTIONS),):
            raise LearnedModelError(f"coef must be {len(ACTIONS)}x{n} and intercept {len(ACTIONS)}")
        if self.mean.shape != (n,) or self.scale.shape != (n,) or not np.all(self.scale > 0):
            raise LearnedModelError(f"mean and scale must hold {n} values, scale > 0")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise LearnedModelError(f"temperature must be > 0, got {self.temperature}")

    @property
    def description(self) -> str:
        c = self.settings.get("C")
        return f"logreg(C={c:g}, T={self.temperature:.2f}, {len(self.trained_on)} videos)"

    # ---- scoring ---------------------------------------------------------------------------------
    def standardise(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        z = (arr - self.mean) / self.scale
        return np.where(np.isnan(z), 0.0, z)

    def raw_probabilities(self, timeline: Timeline, temperature: float | None = None) -> np.ndarray:
        """P over ``ACTIONS`` (canonical order) with the current action removed, at temperature T."""
        logits = self.coef @ self.standardise(features(timeline)) + self.intercept
        logits = logits / (self.temperature if temperature is None else temperature)
        if timeline.current is not None:
            logits[ACTIONS.index(timeline.current)] = -np.inf
        logits -= logits.max()
        p = np.exp(logits)
        return np.asarray(p / p.sum())

    def distribution(self, timeline: Timeline) -> dict[str, float]:
        """Calibrated P(next action) for all five actions (the current one gets 0)."""
        p = self.raw_probabilities(timeline)
        return {a: float(p[i]) for i, a in enumerate(ACTIONS)}

    def log_scores(self, timeline: Timeline) -> dict[str, float]:
        return {a: (math.log(p) if p > 0 else -math.inf) for a, p in self.distribution(timeline).items()}

    def next_in(self, timeline: Timeline) -> NextIn | None:
        """When the next action is expected to start (None without a current clip or a time model)."""
        if self.time_to_next is None or timeline.current is None:
            return None
        return self.time_to_next.remaining(timeline.current, timeline.clip_elapsed_s or 0.0)

    def two_step(self, timeline: Timeline) -> TwoStep:
        """P(a_{t+1}) and P(a_{t+2} | a_{t+1}, history): the second step reuses the model on the
        history extended by each candidate next action (its clip assumed to start after the current
        clip's median duration)."""
        first = self.distribution(timeline)
        either = dict(first)
        best_pair, best_p = (ACTIONS[0], ACTIONS[1]), -1.0
        for nxt, p1 in first.items():
            if p1 <= 0:
                continue
            starts: tuple[float, ...] = ()
            if timeline.starts and timeline.current is not None:
                median = self.time_to_next.median_duration(timeline.current) if self.time_to_next else 46.0
                starts = (*timeline.starts, timeline.starts[-1] + median)
            second = self.distribution(Timeline((*timeline.labels, nxt), starts))
            for after, p2 in second.items():
                either[after] += p1 * p2
                if p1 * p2 > best_p:
                    best_pair, best_p = (nxt, after), p1 * p2
        return TwoStep(either, best_pair, best_p)

    # ---- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "feature_version": FEATURE_VERSION,
            "family": self.family,
            "actions": list(ACTIONS),
            "features": list(FEATURE_NAMES),
            "mean": _rounded(self.mean),
            "scale": _rounded(self.scale),
            "coef": [_rounded(row) for row in self.coef],
            "intercept": _rounded(self.intercept),
            "temperature": self.temperature,
            "settings": dict(self.settings),
            "trained_on": list(self.trained_on),
            "time_to_next": self.time_to_next.to_dict() if self.time_to_next else None,
            "cv": dict(self.cv),
        }

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: object, source: str = "learned model") -> LearnedModel:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LearnedModelError(f"{source}: not an llm-sap learned planner (format must be {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise LearnedModelError(
                f"{source}: format version {data.get('version')!r}, this build reads {FORMAT_VERSION}"
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise LearnedModelError(f"{source}: missing field(s) {', '.join(missing)}")
        if data["feature_version"] != FEATURE_VERSION or data["features"] != list(FEATURE_NAMES):
            raise LearnedModelError(
                f"{source}: features of version {data['feature_version']!r} do not match this build's "
                f"(version {FEATURE_VERSION}, {len(FEATURE_NAMES)} features)"
            )
        if data["actions"] != list(ACTIONS):
            raise LearnedModelError(f"{source}: actions {data['actions']!r} are not {list(ACTIONS)}")
        if data["family"] != "logistic_regression":
            raise LearnedModelError(f"{source}: family {data['family']!r} is not one this build can run")
        try:
            ttn = data["time_to_next"]
            return cls(
                coef=np.asarray(data["coef"], dtype=float),
                intercept=np.asarray(data["intercept"], dtype=float),
                mean=np.asarray(data["mean"], dtype=float),
                scale=np.asarray(data["scale"], dtype=float),
                temperature=float(data["temperature"]),
                time_to_next=None if ttn is None else DurationModel.from_dict(ttn, source),
                settings=dict(data["settings"]),
                trained_on=tuple(str(v) for v in data["trained_on"]),
                cv=dict(data["cv"]),
                family=str(data["family"]),
            )
        except (TypeError, ValueError) as exc:
            raise LearnedModelError(f"{source}: malformed model values ({exc})") from None

    @classmethod
    def load(cls, path: Path | str) -> LearnedModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LearnedModelError(f"{path}: file not found") from None
        except IsADirectoryError:
            raise LearnedModelError(f"{path}: is a directory, expected a learned model JSON file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LearnedModelError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 8) for v in values]


def packaged_learned() -> LearnedModel:
    """The model shipped in the package (``planner/data/learned.json``), fit on the paper's 35
    training videos; regenerate with ``llm-sap fit-learned --annotations FILE``."""
    text = (resources.files("planner") / "data" / "learned.json").read_text(encoding="utf-8")
    return LearnedModel.from_dict(json.loads(text), source="planner/data/learned.json")


def timeline_for(
    history: Sequence[str], starts: Sequence[float] = (), now_s: float | None = None
) -> Timeline:
    return Timeline(tuple(history), tuple(float(s) for s in starts), now_s)


def as_probability_map(values: np.ndarray) -> dict[str, float]:
    return {a: float(values[i]) for i, a in enumerate(ACTIONS)}


_ = Mapping  # re-exported type for callers' annotations
