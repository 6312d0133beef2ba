"""Choose the sequence prior's settings by leave-videos-out cross-validation on training videos.

Only training videos are used for choosing: each fold fits the prior on the other training
videos' label sequences and scores the held-out videos' planning samples with the paper's
metrics. The winner maximises the pooled SLAcc@1, then VLAcc@1, then SLAcc@2; remaining ties
go to the simpler model (lower order, then earlier in the grid). The test videos are scored
only afterwards, for the report.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.memory import NHFMemory
from planner.prior import Method, PriorSettings, SequencePrior
from planner.recommendation import rank_scores
from training.cholect50 import Annotations, PlanningSample
from training.metrics import MetricReport, Scored, compute_metrics

SELECTION_KEYS: tuple[str, ...] = ("SLAcc@1", "VLAcc@1", "SLAcc@2")
METHODS: tuple[Method, ...] = ("backoff", "interpolated")


def default_grid() -> list[PriorSettings]:
    return [
        PriorSettings(order=o, method=m, smoothing=k, min_count=c, collapse_repeats=r)
        for o, m, k, c, r in itertools.product(
            (1, 2, 3, 4, 5), METHODS, (0.01, 0.1, 0.5, 1.0), (1, 2, 3), (True, False)
        )
    ]


@dataclass(frozen=True)
class CVResult:
    settings: PriorSettings
    report: MetricReport

    def key(self) -> tuple[float, ...]:
        return tuple(self.report.metrics[k] for k in SELECTION_KEYS)


def rank_with_prior(prior: SequencePrior, sample: PlanningSample) -> tuple[str, ...]:
    memory = NHFMemory.from_history(sample.distant, sample.nearest)
    scores = prior.next_action_scores(memory.history)
    return tuple(s.action for s in rank_scores(scores, memory.current_action))


def folds(videos: Sequence[str], n_folds: int) -> list[tuple[str, ...]]:
    """Held-out video groups: one video each when ``n_folds`` is 0, else round-robin groups."""
    if n_folds <= 0 or n_folds >= len(videos):
        return [(v,) for v in videos]
    return [tuple(videos[i::n_folds]) for i in range(n_folds)]


def cross_validate(
    data: Annotations, settings: PriorSettings, train_videos: Sequence[str], n_folds: int = 0
) -> MetricReport:
    items: list[Scored] = []
    for held_out in folds(train_videos, n_folds):
        fit_on = [v for v in train_videos if v not in held_out]
        prior = SequencePrior.fit(data.sequences(fit_on), settings)
        for s in data.samples_of(held_out):
            items.append(Scored(s.video, s.target, s.next_action, rank_with_prior(prior, s)))
    return compute_metrics(items)


def select_prior(
    data: Annotations,
    grid: Sequence[PriorSettings] | None = None,
    n_folds: int = 0,
    on_progress: Callable[[int], None] | None = None,
    train_videos: Sequence[str] | None = None,
) -> list[CVResult]:
    """Cross-validate every setting on the training videos (the paper's unless given); best first."""
    train = tuple(data.train_videos if train_videos is None else train_videos)
    results = []
    for i, settings in enumerate(grid or default_grid(), 1):
        results.append(CVResult(settings, cross_validate(data, settings, train, n_folds)))
        if on_progress:
            on_progress(i)
    # Stable sort: among equal scores the grid's order (simpler first) decides.
    return sorted(results, key=lambda r: tuple(-v for v in r.key()))


def fit_final(
    data: Annotations, settings: PriorSettings, train_videos: Sequence[str] | None = None
) -> SequencePrior:
    """The prior on all training videos (the paper's unless given; never the test videos)."""
    videos = tuple(data.train_videos if train_videos is None else train_videos)
    return SequencePrior.fit(data.sequences(videos), settings, trained_on=videos)
