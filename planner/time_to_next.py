"""Time to the next action: how much longer the current clip will last, as a range.

Clip durations are heavy-tailed (median 46 s, mean ~100 s), so a single number misleads. Given
the current action a and how long its clip has lasted (e seconds), the estimate is the
empirical distribution of the remaining time d - e over finished training clips of action a
that lasted longer than e (a survival estimate): its median is the point estimate, and the
``low_q``–``high_q`` quantiles the range. When fewer than ``min_samples`` clips of action a
lasted longer than e, clips of every action are pooled; when even those run out, the longest
``min_samples`` pooled clips are used, with the remaining time floored at 0 ("any moment now").

The baseline it is compared against (``training.sequence_selection``) is the per-action median
duration minus the elapsed time, floored at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from planner.actions import ACTIONS, is_label
from planner.exceptions import LearnedModelError


@dataclass(frozen=True)
class NextIn:
    """Seconds until the next action starts: a point estimate and a range."""

    expected_s: float
    low_s: float
    high_s: float

    def to_dict(self) -> dict[str, float]:
        return {"low": round(self.low_s, 1), "high": round(self.high_s, 1)}


@dataclass(frozen=True)
class DurationModel:
    """Finished clip durations (seconds) per action, sorted; the range's quantiles."""

    durations: Mapping[str, tuple[float, ...]]
    low_q: float = 0.25
    high_q: float = 0.75
    min_samples: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_q < 0.5 < self.high_q <= 1.0:
            raise ValueError(f"need 0 <= low_q < 0.5 < high_q <= 1, got {self.low_q}, {self.high_q}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")

    @classmethod
    def fit(
        cls,
        clips: Sequence[tuple[str, float]],
        low_q: float = 0.25,
        high_q: float = 0.75,
        min_samples: int = 8,
    ) -> DurationModel:
        """From (action, duration seconds) of finished clips."""
        per: dict[str, list[float]] = {a: [] for a in ACTIONS}
        for action, duration in clips:
            per[action].append(float(duration))
        return cls({a: tuple(sorted(v)) for a, v in per.items()}, low_q, high_q, min_samples)

    @property
    def pooled(self) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(v, dtype=float) for v in self.durations.values()]))

    def median_duration(self, action: str) -> float:
        own = self.durations.get(action) or ()
        return float(np.median(own)) if own else float(np.median(self.pooled))

    def remaining(self, action: str | None, elapsed_s: float = 0.0) -> NextIn:
        """The remaining time of a clip of ``action`` that has lasted ``elapsed_s`` seconds."""
        elapsed = max(0.0, float(elapsed_s))
        own = np.asarray(self.durations.get(action or "", ()), dtype=float)
        survivors = own[own > elapsed]
        if len(survivors) < self.min_samples:
            pooled = self.pooled
            survivors = pooled[pooled > elapsed]
            if len(survivors) < self.min_samples:
                survivors = pooled[-self.min_samples :]
        rest = np.maximum(survivors - elapsed, 0.0)
        low, mid, high = np.quantile(rest, [self.low_q, 0.5, self.high_q])
        return NextIn(float(mid), float(low), float(high))

    def baseline(self, action: str | None, elapsed_s: float = 0.0) -> float:
        """Per-action median duration minus the elapsed time, floored at 0."""
        return max(0.0, self.median_duration(action or "") - max(0.0, elapsed_s))

    def to_dict(self) -> dict[str, object]:
        return {
            "low_q": self.low_q,
            "high_q": self.high_q,
            "min_samples": self.min_samples,
            "durations": {a: list(self.durations.get(a, ())) for a in ACTIONS},
        }

    @classmethod
    def from_dict(cls, data: object, source: str) -> DurationModel:
        if not isinstance(data, dict):
            raise LearnedModelError(f"{source}: 'time_to_next' must be an object")
        try:
            raw = data["durations"]
            if not isinstance(raw, dict) or set(raw) != set(ACTIONS):
                raise LearnedModelError(
                    f"{source}: time_to_next.durations must name exactly the five actions"
                )
            durations: dict[str, tuple[float, ...]] = {}
            for action, values in raw.items():
                if not is_label(action) or not isinstance(values, list):
                    raise LearnedModelError(f"{source}: time_to_next.durations[{action!r}] is invalid")
                durations[action] = tuple(sorted(float(v) for v in values))
            if not any(durations.values()):
                raise LearnedModelError(f"{source}: time_to_next.durations holds no clip")
            return cls(durations, float(data["low_q"]), float(data["high_q"]), int(data["min_samples"]))
        except KeyError as exc:
            raise LearnedModelError(f"{source}: time_to_next is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise LearnedModelError(f"{source}: bad time_to_next: {exc}") from None
