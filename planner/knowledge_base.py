"""The surgical domain knowledge base, read from the data files shipped in ``planner/knowledge``.

Three parts, written for this project: the surgical process of a laparoscopic
cholecystectomy, the safety protocol, and one description per action. They form the static
part of every prompt, so they are read once and rendered the same way every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from planner.actions import ACTIONS


@dataclass(frozen=True)
class ActionInfo:
    description: str
    instruments: tuple[str, ...]
    when: str
    caution: str


@dataclass(frozen=True)
class KnowledgeBase:
    surgical_process: str
    safety_protocol: str
    actions: dict[str, ActionInfo]

    def render(self) -> str:
        """The knowledge base as one text block (identical bytes on every call)."""
        lines = ["# Actions", ""]
        for name in ACTIONS:
            info = self.actions[name]
            lines.append(
                f"- {name}: {info.description} Instruments: {', '.join(info.instruments)}. "
                f"{info.when} Caution: {info.caution}"
            )
        return "\n\n".join([self.surgical_process.strip(), self.safety_protocol.strip(), "\n".join(lines)])


@cache
def load_knowledge_base() -> KnowledgeBase:
    folder = resources.files("planner") / "knowledge"
    raw = json.loads((folder / "actions.json").read_text(encoding="utf-8"))
    if set(raw) != set(ACTIONS):
        raise ValueError(f"knowledge/actions.json must describe exactly {ACTIONS}, got {sorted(raw)}")
    actions = {
        name: ActionInfo(
            description=str(raw[name]["description"]),
            instruments=tuple(str(i) for i in raw[name]["instruments"]),
            when=str(raw[name]["when"]),
            caution=str(raw[name]["caution"]),
        )
        for name in ACTIONS
    }
    return KnowledgeBase(
        surgical_process=(folder / "surgical_process.md").read_text(encoding="utf-8"),
        safety_protocol=(folder / "safety_protocol.md").read_text(encoding="utf-8"),
        actions=actions,
    )
