"""Per-stage latency bookkeeping with bounded memory, reported as p50/p90/p99/max."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np


def percentiles(values: Iterable[float]) -> dict[str, float]:
    arr = np.fromiter(values, dtype=float)
    if arr.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "n": int(arr.size),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(arr.max()), 3),
    }


class LatencyRecorder:
    """Keeps the last ``window`` values of each named series (ms)."""

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self._series: dict[str, deque[float]] = {}

    def add(self, name: str, value_ms: float) -> None:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = deque(maxlen=self.window)
        series.append(value_ms)

    def add_all(self, values_ms: Mapping[str, float], prefix: str = "") -> None:
        for name, value in values_ms.items():
            self.add(f"{prefix}{name}", value)

    def values(self, name: str) -> list[float]:
        return list(self._series.get(name, ()))

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: percentiles(series) for name, series in sorted(self._series.items())}
