"""The learned sequence planner at run time: a model over labels and time features
(``planner.sequence_features``), its calibration temperature, the time-to-next model, and the
two-step "next or the one after" ranking. Pure numpy; no scikit-learn at run time.

Two model families can be stored: ``logistic_regression`` (coefficients over standardised
features) and ``gradient_boosting`` (scikit-learn's histogram gradient-boosted trees, exported node
by node to JSON and traversed with numpy: no pickle is ever loaded).

The model is fitted offline (``training.sequence_selection``, ``llm-sap fit-learned``) and
persisted as JSON: coefficients, intercepts, feature names and scaling, settings, training
videos, the CV figures, and a format version. Loading checks all of it and raises
``LearnedModelError`` naming the problem (the CLI maps it to exit 2).

P(next = a) = softmax(f(x) / T) with the current action removed and the rest renormalised
(consecutive clips never share a label); f = W · z + b over standardised features z (unknown
times = 0, the training mean) for the regression, or the trees' summed leaf values plus the
baseline for the boosted trees (unknown times follow each split's learned missing-value side).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
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
_REQUIRED = ("format", "version", "feature_version", "family", "actions", "features", "temperature",
             "settings", "trained_on", "time_to_next", "cv")  # fmt: skip
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "logistic_regression": ("mean", "scale", "coef", "intercept"),
    "gradient_boosting": ("forest",),
}


@dataclass(frozen=True)
class Forest:
    """Boosted trees, padded to one node count: tree i adds ``value[i, leaf]`` to class ``tree_class[i]``."""

    baseline: np.ndarray  # (5,)
    tree_class: np.ndarray  # (n_trees,) int
    feature: np.ndarray  # (n_trees, n_nodes) int
    threshold: np.ndarray  # (n_trees, n_nodes) float: go left when x <= threshold
    missing_left: np.ndarray  # (n_trees, n_nodes) bool: where NaN goes
    left: np.ndarray  # (n_trees, n_nodes) int
    right: np.ndarray  # (n_trees, n_nodes) int
    leaf: np.ndarray  # (n_trees, n_nodes) bool
    value: np.ndarray  # (n_trees, n_nodes) float
    depth: int
    #: real (unpadded) node count of each tree; padding nodes are leaves with value 0
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Summed leaf values per class plus the baseline (the trees' raw prediction)."""
        return np.asarray(self.raw_batch(np.asarray(x, dtype=float)[None, :])[0])

    def raw_batch(self, x: np.ndarray) -> np.ndarray:
        """``raw`` for each row of ``x`` at once: all trees walked together, one level per step."""
        feature, threshold, missing_left, left, right, leaf, value, one_hot = self._flat
        n_trees, n_nodes = self.feature.shape
        base = np.arange(n_trees) * n_nodes
        node = np.broadcast_to(base, (len(x), n_trees)).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            v = x[rows, feature[node]]
            go_left = np.where(np.isnan(v), missing_left[node], v <= threshold[node])
            nxt = np.where(go_left, left[node], right[node]) + base
            node = np.where(leaf[node], node, nxt)
        return np.asarray(self.baseline + value[node] @ one_hot)

    @property
    def _flat(self) -> tuple[np.ndarray, ...]:
        cached: tuple[np.ndarray, ...] | None = self.__dict__.get("_flat_cache")
        if cached is None:
            one_hot = np.zeros((len(self.tree_class), len(self.baseline)))
            one_hot[np.arange(len(self.tree_class)), self.tree_class] = 1.0
            cached = (*(a.ravel() for a in (self.feature, self.threshold, self.missing_left, self.left,
                                            self.right, self.leaf, self.value)), one_hot)  # fmt: skip
            object.__setattr__(self, "_flat_cache", cached)
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": _rounded(self.baseline),
            "depth": self.depth,
            "trees": [
                {
                    "class": int(self.tree_class[i]),
                    "nodes": [
                        [
                            int(self.feature[i, j]),
                            _num(self.threshold[i, j]),
                            int(self.missing_left[i, j]),
                            int(self.left[i, j]),
                            int(self.right[i, j]),
                            int(self.leaf[i, j]),
                            round(float(self.value[i, j]), 10),
                        ]
                        for j in range(int(self.count[i]))
                    ],
                }
                for i in range(len(self.tree_class))
            ],
        }

    @classmethod
    def from_trees(
        cls, baseline: Sequence[float] | np.ndarray, trees: Sequence[tuple[int, Sequence[Sequence[float]]]]
    ) -> Forest:
        """``trees``: (class, nodes); a node is [feature, threshold, missing_left, left, right, leaf,
        value]."""
        if not trees:
            raise LearnedModelError("the forest has no tree")
        n_nodes = max(len(nodes) for _, nodes in trees)
        shape = (len(trees), n_nodes)
        arrays = {
            "feature": np.zeros(shape, dtype=int), "threshold": np.zeros(shape),
            "missing_left": np.zeros(shape, dtype=bool), "left": np.zeros(shape, dtype=int),
            "right": np.zeros(shape, dtype=int), "leaf": np.ones(shape, dtype=bool), "value": np.zeros(shape),
        }  # fmt: skip
        classes = np.zeros(len(trees), dtype=int)
        counts = np.zeros(len(trees), dtype=int)
        for i, (cls_, nodes) in enumerate(trees):
            classes[i] = cls_
            counts[i] = len(nodes)
            for j, node in enumerate(nodes):
                f, thr, miss, left, right, leaf, value = node
                arrays["feature"][i, j] = int(f)
                arrays["threshold"][i, j] = float(thr) if thr is not None else np.inf
                arrays["missing_left"][i, j] = bool(miss)
                arrays["left"][i, j], arrays["right"][i, j] = int(left), int(right)
                arrays["leaf"][i, j] = bool(leaf)
                arrays["value"][i, j] = float(value)
        n_features = len(FEATURE_NAMES)
        inner = ~arrays["leaf"]
        bad_child = (
            (arrays["left"] < 0)
            | (arrays["left"] >= n_nodes)
            | (arrays["right"] < 0)
            | (arrays["right"] >= n_nodes)
        )
        if (
            np.any(inner & bad_child)
            or np.any(inner & ((arrays["feature"] < 0) | (arrays["feature"] >= n_features)))
            or np.any((classes < 0) | (classes >= len(ACTIONS)))
        ):
            raise LearnedModelError("the forest has a node pointing outside its tree or features")
        depth = _max_depth(arrays["left"], arrays["right"], arrays["leaf"])
        return cls(np.asarray(baseline, dtype=float), classes, depth=depth, count=counts, **arrays)


def _max_depth(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> int:
    deepest = 0
    for i in range(len(left)):
        stack = [(0, 0)]
        while stack:
            node, d = stack.pop()
            if d > 64:
                raise LearnedModelError("a tree is deeper than 64 levels (or has a cycle)")
            deepest = max(deepest, d)
            if not leaf[i, node]:
                stack += [(int(left[i, node]), d + 1), (int(right[i, node]), d + 1)]
    return deepest


def _num(v: float) -> float | None:
    return None if not math.isfinite(float(v)) else float(v)


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
    coef: np.ndarray | None  # (5, F), logistic regression
    intercept: np.ndarray | None  # (5,)
    mean: np.ndarray | None  # (F,)
    scale: np.ndarray | None  # (F,)
    temperature: float = 1.0
    time_to_next: DurationModel | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    trained_on: tuple[str, ...] = ()
    cv: Mapping[str, Any] = field(default_factory=dict)
    family: str = "logistic_regression"
    forest: Forest | None = None  # gradient boosting

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise LearnedModelError(f"temperature must be > 0, got {self.temperature}")
        if self.family == "gradient_boosting":
            if self.forest is None or self.forest.baseline.shape != (len(ACTIONS),):
                raise LearnedModelError(
                    f"a gradient_boosting model needs a forest with {len(ACTIONS)} baselines"
                )
            return
        if self.family != "logistic_regression":
            raise LearnedModelError(f"family {self.family!r} is not one this build can run")
        n = len(FEATURE_NAMES)
        if self.coef is None or self.intercept is None or self.mean is None or self.scale is None:
            raise LearnedModelError("a logistic_regression model needs coef, intercept, mean and scale")
        if self.coef.shape != (len(ACTIONS), n) or self.intercept.shape != (len(ACTIONS),):
            raise LearnedModelError(f"coef must be {len(ACTIONS)}x{n} and intercept {len(ACTIONS)}")
        if self.mean.shape != (n,) or self.scale.shape != (n,) or not np.all(self.scale > 0):
            raise LearnedModelError(f"mean and scale must hold {n} values, scale > 0")

    @property
    def description(self) -> str:
        if self.family == "gradient_boosting" and self.forest is not None:
            what = f"gboost({len(self.forest.tree_class)} trees"
        else:
            what = f"logreg(C={self.settings.get('C', 0):g}"
        return f"{what}, T={self.temperature:.2f}, {len(self.trained_on)} videos)"

    # ---- scoring ---------------------------------------------------------------------------------
    def standardise(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.scale is not None
        arr = np.asarray(x, dtype=float)
        z = (arr - self.mean) / self.scale
        return np.where(np.isnan(z), 0.0, z)

    def logits(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """The model's raw class scores for one feature vector (before temperature and masking)."""
        return np.asarray(self.logits_batch(np.asarray(x, dtype=float)[None, :])[0])

    def logits_batch(self, x: np.ndarray) -> np.ndarray:
        """``logits`` for each row of ``x``."""
        if self.forest is not None:
            return self.forest.raw_batch(x)
        assert self.coef is not None and self.intercept is not None
        return np.asarray(self.standardise(x) @ self.coef.T + self.intercept)

    def _probabilities(
        self, logits: np.ndarray, current: str | None, temperature: float | None
    ) -> np.ndarray:
        logits = logits / (self.temperature if temperature is None else temperature)
        if current is not None:
            logits[ACTIONS.index(current)] = -np.inf
        logits -= logits.max()
        p = np.exp(logits)
        return np.asarray(p / p.sum())

    def raw_probabilities(self, timeline: Timeline, temperature: float | None = None) -> np.ndarray:
        """P over ``ACTIONS`` (canonical order) with the current action removed, at temperature T."""
        return self._probabilities(self.logits(features(timeline)), timeline.current, temperature)

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

    def two_step(self, timeline: Timeline, first: Mapping[str, float] | None = None) -> TwoStep:
        """P(a_{t+1}) and P(a_{t+2} | a_{t+1}, history): the second step reuses the model on the
        history extended by each candidate next action (its clip assumed to start after the current
        clip's median duration). ``first``: another engine's P(a_{t+1}) (default: this model's)."""
        first = dict(self.distribution(timeline) if first is None else first)
        either = dict(first)
        best_pair, best_p = (ACTIONS[0], ACTIONS[1]), -1.0
        starts: tuple[float, ...] = ()
        if timeline.starts and timeline.current is not None:
            median = self.time_to_next.median_duration(timeline.current) if self.time_to_next else 46.0
            starts = (*timeline.starts, timeline.starts[-1] + median)
        candidates = [a for a in ACTIONS if first[a] > 0]
        if not candidates:
            return TwoStep(either, best_pair, 0.0)
        x = np.array([features(Timeline((*timeline.labels, a), starts)) for a in candidates], dtype=float)
        for nxt, logits in zip(candidates, self.logits_batch(x), strict=True):
            second = self._probabilities(logits, nxt, None)
            for i, after in enumerate(ACTIONS):
                joint = first[nxt] * float(second[i])
                either[after] += joint
                if joint > best_p:
                    best_pair, best_p = (nxt, after), joint
        return TwoStep(either, best_pair, best_p)

    # ---- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.forest is not None:
            params["forest"] = self.forest.to_dict()
        else:
            assert self.mean is not None and self.scale is not None
            assert self.coef is not None and self.intercept is not None
            params = {"mean": _rounded(self.mean), "scale": _rounded(self.scale),
                      "coef": [_rounded(row) for row in self.coef],
                      "intercept": _rounded(self.intercept)}  # fmt: skip
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "feature_version": FEATURE_VERSION,
            "family": self.family,
            "actions": list(ACTIONS),
            "features": list(FEATURE_NAMES),
            **params,
            "temperature": self.temperature,
            "settings": dict(self.settings),
            "trained_on": list(self.trained_on),
            "time_to_next": self.time_to_next.to_dict() if self.time_to_next else None,
            "cv": dict(self.cv),
        }

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

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
        family = data["family"]
        if family not in FAMILY_FIELDS:
            raise LearnedModelError(f"{source}: family {family!r} is not one this build can run")
        missing = [k for k in FAMILY_FIELDS[family] if k not in data]
        if missing:
            raise LearnedModelError(f"{source}: missing field(s) {', '.join(missing)} of a {family} model")
        try:
            ttn = data["time_to_next"]
            forest = None
            arrays: dict[str, np.ndarray | None] = dict.fromkeys(("coef", "intercept", "mean", "scale"))
            if family == "gradient_boosting":
                raw = data["forest"]
                trees = [(int(t["class"]), t["nodes"]) for t in raw["trees"]]
                forest = Forest.from_trees(raw["baseline"], trees)
            else:
                arrays = {k: np.asarray(data[k], dtype=float) for k in arrays}
            return cls(
                **arrays,
                forest=forest,
                temperature=float(data["temperature"]),
                time_to_next=None if ttn is None else DurationModel.from_dict(ttn, source),
                settings=dict(data["settings"]),
                trained_on=tuple(str(v) for v in data["trained_on"]),
                cv=dict(data["cv"]),
                family=str(data["family"]),
            )
        except LearnedModelError as exc:
            raise LearnedModelError(f"{source}: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise LearnedModelError(f"{source}: malformed model values ({exc!r})") from None

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


@cache
def packaged_learned() -> LearnedModel:
    """The model shipped in the package (``planner/data/learned.json``), fit on the paper's 35
    training videos; regenerate with ``llm-sap fit-learned --annotations FILE``."""
    text = (resources.files("planner") / "data" / "learned.json").read_text(encoding="utf-8")
    return LearnedModel.from_dict(json.loads(text), source="planner/data/learned.json")
