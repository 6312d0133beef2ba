"""``reference``: a teacher that needs no model, for users without a strong teacher and for tests.

It ranks the ground-truth target first, then the other actions in the sequence prior's order
(the prior is fit on the training videos; the current action, which never repeats, comes
last), keeps the top three, and writes the rationales from the knowledge base and the history.
It is deterministic: the same sample gives the same answer whatever the temperature or index.
"""

from __future__ import annotations

import hashlib
import json

from planner.knowledge_base import load_knowledge_base
from planner.recommendation import rank_scores
from planner.response import MAX_ACTIONS
from training.teachers import TeacherContext, TeacherRequest

VERSION = "reference-v1"

#: Capability: the answer depends on the sample's ground truth (see ``training.teachers``).
SEES_GROUND_TRUTH = True


def ranked_actions(ctx: TeacherContext, request: TeacherRequest) -> list[str]:
    s = request.sample.source
    scores = ctx.prior.next_action_scores(s.history)
    by_prior = [a.action for a in rank_scores(scores, s.nearest)]
    return [s.target, *(a for a in by_prior if a != s.target)][:MAX_ACTIONS]


def write_response(ctx: TeacherContext, request: TeacherRequest) -> str:
    s = request.sample.source
    kb = load_knowledge_base()
    ranked = ranked_actions(ctx, request)
    recent = ", ".join(s.distant[-3:]) if s.distant else "no earlier clip"
    if s.nearest:
        progress = (
            f"{len(s.history)} action clips so far; the current clip is {s.nearest}, "
            f"after {recent}. {kb.actions[s.nearest].description}"
        )
    else:
        progress = "The procedure is starting: no action clip has been seen yet."
    safety = f"Before {ranked[0].lower()}: {kb.actions[ranked[0]].caution}"
    rationales = []
    for rank, action in enumerate(ranked):
        info = kb.actions[action]
        lead = (
            f"After {s.nearest}, this is the most likely next step."
            if rank == 0 and s.nearest
            else "The most likely first step."
            if rank == 0
            else "An alternative if the field calls for it."
        )
        rationales.append({"action": action, "rationale": f"{lead} {info.when}"})
    answer = {"progress_assessment": progress, "safety_considerations": safety, "next_actions": rationales}
    return json.dumps(answer, ensure_ascii=False)


class ReferenceTeacher:
    spec = "reference"

    def __init__(self, ctx: TeacherContext) -> None:
        self.ctx = ctx
        self.model = describe("", ctx)
        self.calls = 0

    def respond(self, request: TeacherRequest) -> str:
        self.calls += 1
        return write_response(self.ctx, request)

    def close(self) -> None:
        return None


def describe(arg: str, ctx: TeacherContext) -> str:
    """``reference-v1`` plus a digest of the prior it ranks with (a refit prior changes the answers)."""
    counts = json.dumps(ctx.prior.counts, sort_keys=True).encode()
    return f"{VERSION} prior[{ctx.prior.settings.describe()} {hashlib.sha256(counts).hexdigest()[:12]}]"


def create(arg: str, ctx: TeacherContext) -> ReferenceTeacher:
    return ReferenceTeacher(ctx)
