"""What a planner returns: all five actions ranked with scores, plus optional text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from planner.actions import ACTIONS
from planner.response import StructuredResponse


@dataclass(frozen=True)
class ScoredAction:
    action: str
    score: float  # probability in [0, 1]; the ranking sorts by it


@dataclass(frozen=True)
class Recommendation:
    """A next-action recommendation for the clip after the current one.

    ``ranked`` always holds all five labels, best first; the current action (if any) is
    last with score 0 because consecutive clips never share a label.
    """

    ranked: tuple[ScoredAction, ...]
    current_action: str | None
    history: tuple[str, ...]
    engine: str
    model: str
    degraded: bool = False
    degraded_reason: str | None = None
    response: StructuredResponse | None = None
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    #: "next or the one after": P(a_{t+1} = a) + P(a_{t+2} = a), halved so the five sum to 1, best
    #: first (empty when no sequence model is loaded)
    next_or_after: tuple[ScoredAction, ...] = ()
    best_pair: tuple[str, str] | None = None  # the most likely two-step sequence
    #: remaining time of the current clip, ``remaining(action, elapsed_s) -> NextIn`` (the payload
    #: evaluates it at the clip's elapsed time when it is published); None when unknown
    time_to_next: Any = field(default=None, compare=False, repr=False)

    @property
    def ranked_labels(self) -> tuple[str, ...]:
        return tuple(s.action for s in self.ranked)

    @property
    def top(self) -> str:
        return self.ranked[0].action


def rank_scores(scores: Mapping[str, float], current_action: str | None) -> tuple[ScoredAction, ...]:
    """Order five probabilities best first; ties keep canonical order; the current action last."""
    if set(scores) != set(ACTIONS):
        missing = sorted(set(ACTIONS) - set(scores))
        extra = sorted(set(scores) - set(ACTIONS))
        raise ValueError(f"scores must cover exactly the five actions (missing {missing}, extra {extra})")

    def key(action: str) -> tuple[int, float, int]:
        return (action == current_action, -scores[action], ACTIONS.index(action))

    ordered = sorted(ACTIONS, key=key)
    return tuple(ScoredAction(a, 0.0 if a == current_action else round(float(scores[a]), 6)) for a in ordered)
