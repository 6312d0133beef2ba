"""The sequence partner of a Planner: the label planner a model engine is fused with, and whose
ranking a degraded recommendation falls back to (``planner.partner``).

``prior`` is the n-gram over label sequences (the default: the fusion weights were selected
with it); ``learned`` / ``learned:FILE`` is the learned sequence planner (labels and clip times,
calibrated). Both need no model and answer in well under a millisecond.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from planner.learned import LearnedModel, packaged_learned
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.sequence_features import Timeline

#: the partner names ``planner.partner`` accepts (``learned`` may name a file: ``learned:FILE``)
PARTNERS = ("prior", "learned")


class SequencePartner(Protocol):
    name: str  # what a degraded recommendation names as its engine
    model: str  # and as its model
    calibrated: bool  # its probabilities carry their own temperature

    def log_scores(self, memory: NHFMemory) -> dict[str, float]: ...


class NgramPartner:
    name = "prior"
    calibrated = False  # the planner's temperature applies

    def __init__(self, prior: SequencePrior) -> None:
        self.prior = prior
        self.model = f"ngram({prior.settings.describe()})"

    def log_scores(self, memory: NHFMemory) -> dict[str, float]:
        return self.prior.log_scores(memory.history)


class LearnedPartner:
    name = "learned"
    calibrated = True  # carries its own temperature

    def __init__(self, learned: LearnedModel) -> None:
        self.learned = learned
        self.model = learned.description

    def log_scores(self, memory: NHFMemory) -> dict[str, float]:
        return self.learned.log_scores(Timeline.from_memory(memory))


def check_partner_spec(spec: str) -> str:
    """``prior``, ``learned`` or ``learned:FILE``; a ValueError names the choices otherwise."""
    name, _, arg = spec.partition(":")
    if name not in PARTNERS or (name == "prior" and arg):
        raise ValueError(f"planner.partner must be prior, learned or learned:FILE, got {spec!r}")
    return spec


def build_partner(spec: str, prior: SequencePrior) -> SequencePartner:
    name, _, arg = check_partner_spec(spec).partition(":")
    if name == "prior":
        return NgramPartner(prior)
    return LearnedPartner(LearnedModel.load(Path(arg)) if arg else packaged_learned())
