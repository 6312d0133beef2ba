"""The sequence prior as a planning engine: the planner of last resort, no model needed."""

from __future__ import annotations

import json
from collections.abc import Iterator

from planner.engines.base import EngineSettings
from planner.knowledge_base import load_knowledge_base
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.recommendation import rank_scores


class PriorEngine:
    """Ranks by the n-gram prior; its "text" is a rationale built from the knowledge base."""

    name = "prior"
    instant = True
    needs_model = False
    batch_rank = False
    reads_near: frozenset[str] = frozenset()  # labels only

    def __init__(self, prior: SequencePrior) -> None:
        self.prior = prior
        self.model = f"ngram({prior.settings.describe()})"

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        return self.prior.log_scores(memory.history)

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        probs = self.prior.next_action_scores(memory.history)
        ranked = rank_scores(probs, memory.current_action)[:3]
        kb = load_knowledge_base()
        after = f"after {memory.current_action}" if memory.current_action else "at the start"
        response = {
            "progress_assessment": (
                f"{len(memory.history)} clips so far; current action: {memory.current_action or 'none'}."
            ),
            "safety_considerations": kb.actions[ranked[0].action].caution,
            "next_actions": [
                {
                    "action": s.action,
                    "rationale": f"{s.score:.0%} of similar sequences continue with it {after}. "
                    f"{kb.actions[s.action].when}",
                }
                for s in ranked
            ],
        }
        yield json.dumps(response)

    def close(self) -> None:
        return None


def create(arg: str, prior: SequencePrior, settings: EngineSettings) -> PriorEngine:
    if arg:
        prior = SequencePrior.load(arg)
    return PriorEngine(prior)
