"""The prompts factory: DCPrompts (caption a frame), APPrompts (plan), option scoring.

Every prompt is a list of chat messages whose first message, the system message, is the
static part: the role statement plus the knowledge base. It is byte-identical on every call,
so inference engines reuse its KV cache (prefix caching). Everything that changes per request
(history, caption, keyframes, options) lives in the user message after it.

Messages follow the Hugging Face chat format: ``{"role": ..., "content": str}`` for text, and
for images ``content`` is a list of ``{"type": "text", "text": ...}`` /
``{"type": "image", "image": ref}`` parts (``ref`` is whatever the engine can open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from planner.actions import ACTIONS, OPTION_LETTERS
from planner.knowledge_base import load_knowledge_base
from planner.memory import NHFMemory

Message = dict[str, Any]
Variant = Literal["indirect", "direct"]

ROLE = (
    "You are a surgical assistant for laparoscopic cholecystectomy. You watch the procedure "
    "as a sequence of action clips and advise the surgical team on the next action. "
    f"The only actions are: {', '.join(ACTIONS)}. Consecutive clips never share an action, "
    "so the next action always differs from the current one. Your advice is advisory: the "
    "surgeon decides."
)

RESPONSE_FORMAT = (
    "Answer with a JSON object and nothing else, in this shape:\n"
    '{"progress_assessment": "<one or two sentences on where the procedure stands>", '
    '"safety_considerations": "<one or two sentences on risks for the next step>", '
    '"next_actions": [{"action": "<action>", "rationale": "<why>"}, '
    '{"action": "<action>", "rationale": "<why>"}, {"action": "<action>", "rationale": "<why>"}]}\n'
    "List three different actions, most likely first."
)

CAPTION_INSTRUCTION = (
    "Describe this laparoscopic frame in one or two sentences: the visible instruments, the "
    "anatomy they act on, and what the surgeon is doing. Do not guess beyond what is visible."
)


@cache
def system_prompt() -> str:
    """The static prefix: role + knowledge base. Cached, so every call returns the same object."""
    return f"{ROLE}\n\n{load_knowledge_base().render()}"


def system_message() -> Message:
    return {"role": "system", "content": system_prompt()}


@dataclass(frozen=True)
class Prompt:
    """Chat messages, plus the lettered options when the prompt is a scoring prompt."""

    messages: tuple[Message, ...]
    options: tuple[tuple[str, str], ...] = ()  # (letter, action), in the order shown

    def action_for(self, letter: str) -> str:
        return dict(self.options)[letter]


def _history_text(memory: NHFMemory) -> str:
    distant = ", ".join(memory.distant) if memory.distant else "none (this is the first clip)"
    current = memory.current_action or "unknown (no clip has started)"
    return (
        f"Distant history (earlier clips, oldest first): {distant}.\nCurrent action (this clip): {current}."
    )


def _user_content(memory: NHFMemory, variant: Variant, task: str) -> str | list[dict[str, Any]]:
    history = _history_text(memory)
    near = memory.near
    if variant == "indirect":
        caption = near.caption if near and near.caption else "no description available"
        return f"{history}\nWhat the current clip shows: {caption}\n\n{task}"
    if variant == "direct":
        frames = near.keyframes if near else ()
        parts: list[dict[str, Any]] = [{"type": "text", "text": f"{history}\nKeyframes of the current clip:"}]
        parts += [{"type": "image", "image": ref} for ref in frames]
        if not frames:
            parts.append({"type": "text", "text": " none available."})
        parts.append({"type": "text", "text": f"\n\n{task}"})
        return parts
    raise ValueError(f"prompt variant must be 'indirect' or 'direct', got {variant!r}")


class APPrompts:
    """Action-planning prompts: IndirNHFM (caption C_t) or DirNHFM (keyframes v_t)."""

    @staticmethod
    def plan(memory: NHFMemory, variant: Variant = "indirect") -> Prompt:
        """Ask for the full structured response (assessment, safety, three ranked actions)."""
        task = f"Predict the action of the next clip.\n{RESPONSE_FORMAT}"
        user = {"role": "user", "content": _user_content(memory, variant, task)}
        return Prompt(messages=(system_message(), user))

    @staticmethod
    def options(
        memory: NHFMemory,
        variant: Variant = "indirect",
        order: Sequence[str] = ACTIONS,
    ) -> Prompt:
        """Ask for one option letter; ``order`` sets which action each letter A-E stands for."""
        if sorted(order) != sorted(ACTIONS):
            raise ValueError(f"option order must be a permutation of the five actions, got {list(order)}")
        options = tuple(zip(OPTION_LETTERS, order, strict=True))
        listing = "\n".join(f"{letter}. {action}" for letter, action in options)
        task = (
            f"Which action comes in the next clip?\n{listing}\n"
            "Answer with the letter of the most likely option only."
        )
        user = {"role": "user", "content": _user_content(memory, variant, task)}
        return Prompt(messages=(system_message(), user), options=options)


class DCPrompts:
    """Description prompts: caption one keyframe of the current clip (for IndirNHFM)."""

    @staticmethod
    def caption(frame_ref: object) -> Prompt:
        user = {
            "role": "user",
            "content": [{"type": "image", "image": frame_ref}, {"type": "text", "text": CAPTION_INSTRUCTION}],
        }
        return Prompt(messages=(system_message(), user))
