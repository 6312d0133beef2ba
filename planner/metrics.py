"""The paper's metrics, exactly: SLAcc, VLAcc, ReSLAcc, ReVLAcc at top-1/2/3, in percent.

- SLAcc@k: share of samples whose target is in the top k.
- VLAcc@k: mean over videos of each video's SLAcc@k (videos with no sample left out).
- ReSLAcc@k / ReVLAcc@k: relaxed, the target or the next clip's action in the top k; counted
  only over samples that have a next clip.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TOP_K: tuple[int, ...] = (1, 2, 3)
METRIC_NAMES: tuple[str, ...] = ("SLAcc", "VLAcc", "ReSLAcc", "ReVLAcc")


@dataclass(frozen=True)
class Scored:
    """One planning sample's outcome: what was right and what was ranked."""

    video: str
    target: str
    next_action: str | None
    ranked: tuple[str, ...]


@dataclass(frozen=True)
class MetricReport:
    samples: int
    relaxed_samples: int
    videos: int
    metrics: dict[str, float]  # "SLAcc@1" -> percent, rounded to 2 decimals

    def to_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "relaxed_samples": self.relaxed_samples,
            "videos": self.videos,
            "metrics": dict(self.metrics),
        }


def metric_keys() -> tuple[str, ...]:
    return tuple(f"{name}@{k}" for name in METRIC_NAMES for k in TOP_K)


def hit(item: Scored, k: int) -> bool:
    return item.target in item.ranked[:k]


def relaxed_hit(item: Scored, k: int) -> bool:
    top = item.ranked[:k]
    return item.target in top or (item.next_action is not None and item.next_action in top)


def compute_metrics(items: Sequence[Scored]) -> MetricReport:
    if not items:
        raise ValueError("no samples to score")
    relaxed = [s for s in items if s.next_action is not None]
    metrics: dict[str, float] = {}
    for k in TOP_K:
        metrics[f"SLAcc@{k}"] = _percent(sum(hit(s, k) for s in items), len(items))
        metrics[f"VLAcc@{k}"] = _video_mean(items, lambda s: hit(s, k))  # noqa: B023 (called at once)
        metrics[f"ReSLAcc@{k}"] = _percent(sum(relaxed_hit(s, k) for s in relaxed), len(relaxed))
        metrics[f"ReVLAcc@{k}"] = _video_mean(relaxed, lambda s: relaxed_hit(s, k))  # noqa: B023 (called at once)
    ordered = {key: round(metrics[key], 2) for key in metric_keys()}
    return MetricReport(
        samples=len(items),
        relaxed_samples=len(relaxed),
        videos=len({s.video for s in items}),
        metrics=ordered,
    )


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def _video_mean(items: Sequence[Scored], ok: Callable[[Scored], bool]) -> float:
    per_video: dict[str, list[bool]] = defaultdict(list)
    for s in items:
        per_video[s.video].append(ok(s))
    if not per_video:
        return 0.0
    return sum(100.0 * sum(v) / len(v) for v in per_video.values()) / len(per_video)
