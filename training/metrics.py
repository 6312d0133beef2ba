"""The paper's metrics (SLAcc, VLAcc, ReSLAcc, ReVLAcc at top-1/2/3) live in ``planner.metrics``:
the live replay (``streamer``) scores what it published with them too, and ``streamer`` never
imports ``training``. This module keeps the training side's import path."""

from planner.metrics import (
    METRIC_NAMES,
    TOP_K,
    MetricReport,
    Scored,
    compute_metrics,
    hit,
    metric_keys,
    relaxed_hit,
)

__all__ = [
    "METRIC_NAMES",
    "TOP_K",
    "MetricReport",
    "Scored",
    "compute_metrics",
    "hit",
    "metric_keys",
    "relaxed_hit",
]
