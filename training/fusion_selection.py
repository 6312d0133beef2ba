"""Choose the fusion weight λ (log p_engine + λ log p_prior) by cross-validation on training videos.

The engine scores every training sample once. Each fold holds out one training video (or a
group), fits the prior on the other training videos, fuses, and scores the held-out samples; the
λ with the best pooled SLAcc@1 (then VLAcc@1, then SLAcc@2; ties to the smaller λ) wins. Test
videos are never used for choosing.

Caveat, said in the report: an engine fine-tuned on the training videos has seen them, so its
CV scores on them are optimistic and λ may come out too small for such an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from planner.memory import NHFMemory
from planner.planner import fuse
from planner.prior import PriorSettings, SequencePrior
from planner.recommendation import rank_scores
from training.cholect50 import Annotations, PlanningSample
from training.metrics import MetricReport, Scored, compute_metrics
from training.prior_selection import SELECTION_KEYS, folds

DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

EngineScores = Mapping[tuple[str, str], Mapping[str, float]]  # (video, clip) -> log-scores


@dataclass(frozen=True)
class FusionResult:
    weight: float
    report: MetricReport

    def key(self) -> tuple[float, ...]:
        return tuple(self.report.metrics[k] for k in SELECTION_KEYS)


def fused_ranking(
    engine_log: Mapping[str, float], prior: SequencePrior, sample: PlanningSample, weight: float
) -> tuple[str, ...]:
    memory = NHFMemory.from_history(sample.distant, sample.nearest)
    current = memory.current_action
    llm = {a: (float("-inf") if a == current else v) for a, v in engine_log.items()}
    probs = fuse(llm, prior.log_scores(memory.history), weight)
    return tuple(s.action for s in rank_scores(probs, current))


def score_engine(
    samples: Sequence[PlanningSample],
    rank: Callable[[NHFMemory], Mapping[str, float]],
    on_progress: Callable[[int], None] | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for i, s in enumerate(samples, 1):
        out[s.key] = dict(rank(NHFMemory.from_history(s.distant, s.nearest, keyframes=s.near_frames)))
        if on_progress:
            on_progress(i)
    return out


def select_fusion_weight(
    data: Annotations,
    engine_scores: EngineScores,
    prior_settings: PriorSettings,
    weights: Sequence[float] = DEFAULT_LAMBDAS,
    n_folds: int = 0,
    train_videos: Sequence[str] | None = None,
) -> list[FusionResult]:
    """Cross-validated metrics for every λ on the training videos (the paper's unless given), best first."""
    train = tuple(data.train_videos if train_videos is None else train_videos)
    items: dict[float, list[Scored]] = {w: [] for w in weights}
    for held_out in folds(train, n_folds):
        prior = SequencePrior.fit(data.sequences([v for v in train if v not in held_out]), prior_settings)
        for s in data.samples_of(held_out):
            for w in weights:
                ranked = fused_ranking(engine_scores[s.key], prior, s, w)
                items[w].append(Scored(s.video, s.target, s.next_action, ranked))
    results = [FusionResult(w, compute_metrics(items[w])) for w in weights]
    return sorted(results, key=lambda r: tuple(-v for v in r.key()))
