"""The contract every planning engine fulfils: rank the five actions; generate text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from planner.memory import NHFMemory


@runtime_checkable
class PlanningEngine(Protocol):
    """A source of next-action scores and of the structured response text.

    ``rank`` is the fast path and must always be valid: it returns natural-log scores for
    all five actions from one scoring step (never from parsing generated text). ``generate``
    writes the structured response (see ``planner.response``) and may stream it in chunks.
    Both may block: callers run them off the event loop and under a deadline.
    """

    name: str  # engine kind, e.g. "prior", "transformers"
    model: str  # what wrote the scores: a model path or id, or the prior's settings

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        """Log-scores (natural log, higher is better) for each of the five actions."""
        ...

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        """The structured response as text chunks."""
        ...

    def close(self) -> None:
        """Release threads, sessions and memory."""
        ...
