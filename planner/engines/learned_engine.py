"""The learned sequence planner as a planning engine: labels + time features, calibrated; no model
weights beyond a small JSON file (``learned`` = the packaged one, ``learned:FILE`` = a fitted one)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from planner.engines.base import EngineSettings
from planner.exceptions import EngineError
from planner.knowledge_base import load_knowledge_base
from planner.learned import LearnedModel, packaged_learned
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.recommendation import rank_scores
from planner.sequence_features import Timeline


class LearnedEngine:
    """Ranks by the learned model (calibrated probabilities); its "text" is built from the knowledge base."""

    name = "learned"
    instant = True  # 500 small trees in numpy, ~0.2 ms a ranking here: runs inline on the caller's loop
    needs_model = False
    batch_rank = False
    calibrated = True  # the model's temperature is already applied: the planner adds none
    reads_near: frozenset[str] = frozenset()  # labels and clip start times only

    def __init__(self, model: LearnedModel) -> None:
        self.learned = model
        self.model = model.description
        self._closed = False

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        if self._closed:
            raise EngineError("the learned engine is closed")
        return self.learned.log_scores(Timeline.from_memory(memory))

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        timeline = Timeline.from_memory(memory)
        probs = self.learned.distribution(timeline)
        ranked = rank_scores(probs, memory.current_action)[:3]
        kb = load_knowledge_base()
        after = f"after {memory.current_action}" if memory.current_action else "at the start"
        progress = f"{len(memory.history)} clips so far; current action: {memory.current_action or 'none'}."
        next_in = self.learned.next_in(timeline)
        if next_in is not None:
            progress += f" Typical remaining time of this action: {next_in.low_s:.0f}–{next_in.high_s:.0f} s."
        response = {
            "progress_assessment": progress,
            "safety_considerations": kb.actions[ranked[0].action].caution,
            "next_actions": [
                {
                    "action": s.action,
                    "rationale": f"{s.score:.0%} estimated chance that it comes next {after} (learned from "
                    f"label sequences and timing). {kb.actions[s.action].when}",
                }
                for s in ranked
            ],
        }
        yield json.dumps(response)

    def close(self) -> None:
        self._closed = True


def create(arg: str, prior: SequencePrior, settings: EngineSettings) -> LearnedEngine:
    return LearnedEngine(LearnedModel.load(arg) if arg else packaged_learned())
