"""Rule-based GRPO rewards: pure functions of the answer text and the ground truth, in [0, 1].

- ``format_reward``: 1 for a parseable structured response with three distinct valid actions, no
  unknown items, and both a progress assessment and safety considerations; graded below that
  (each valid action 0.2, no unknown items 0.1, each text field 0.15); 0 when unparseable.
- ``correctness_reward``: 1 when the top-1 is the target, 0.5 when the top-1 is the next clip's
  action (the relaxed metric's second chance), 0.25 when the target is second or third, else 0.

The ``trl_*`` wrappers adapt them to TRL's reward-function call: ``(completions, **columns)`` ->
one float per completion, where conversational completions are lists of messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from planner.response import MAX_ACTIONS, StructuredResponse, parse_response

ACTION_CREDIT = 0.2
CLEAN_CREDIT = 0.1
TEXT_CREDIT = 0.15
TOP1_TARGET, TOP1_NEXT, TOP3_TARGET = 1.0, 0.5, 0.25


def completion_text(completion: Any) -> str:
    """The assistant text of a completion: a string, a message, or a list of messages (last wins)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content")
        if isinstance(content, list):  # content parts
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else ""
    if isinstance(completion, list | tuple):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                return completion_text(message)
    return ""


def _parsed(text: object) -> StructuredResponse | None:
    if not isinstance(text, str):
        return None
    result = parse_response(text)
    return result if isinstance(result, StructuredResponse) else None


def format_reward(text: object) -> float:
    """1.0 for a complete structured response; partial credit; 0.0 when unparseable."""
    response = _parsed(text)
    if response is None:
        return 0.0
    score = ACTION_CREDIT * min(len(response.actions), MAX_ACTIONS)
    score += CLEAN_CREDIT * (not response.unknown_items)
    score += TEXT_CREDIT * bool(response.progress_assessment.strip())
    score += TEXT_CREDIT * bool(response.safety_considerations.strip())
    return round(min(score, 1.0), 6)


def correctness_reward(text: object, target: object, next_action: object = None) -> float:
    """Graded: target first (1) > next clip's action first (0.5) > target second or third (0.25) > 0."""
    response = _parsed(text)
    if response is None or not isinstance(target, str) or not target:
        return 0.0
    ranked = response.ranked_labels
    if ranked[0] == target:
        return TOP1_TARGET
    if isinstance(next_action, str) and next_action and ranked[0] == next_action:
        return TOP1_NEXT
    if target in ranked[:MAX_ACTIONS]:
        return TOP3_TARGET
    return 0.0


def _column(kwargs: dict[str, Any], name: str, n: int) -> Sequence[Any]:
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    return list(values)


def trl_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: ``format_reward`` per completion."""
    return [format_reward(completion_text(c)) for c in completions]


def trl_correctness_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: ``correctness_reward`` with the ``target`` / ``next_action`` columns."""
    n = len(completions)
    targets, nexts = _column(kwargs, "target", n), _column(kwargs, "next_action", n)
    rows = zip(completions, targets, nexts, strict=True)
    return [correctness_reward(completion_text(c), t, x) for c, t, x in rows]
