"""The planner's structured response and a forgiving parser for it (pure, no IO).

Prompts ask for the JSON of :meth:`StructuredResponse.to_dict`; models also answer with fenced or
prose-wrapped JSON, other key spellings, or the paper's free-text layout ("Progress Assessment:",
"Next Actions:" and a ranked list). Every ranked item is mapped with :func:`to_label`; items that
name no label are kept as ``unknown_items`` and never guessed.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

from planner.actions import ACTIONS, normalize_text, to_label

MAX_ACTIONS: Final = 3


@dataclass(frozen=True)
class RankedAction:
    action: str  # always one of ACTIONS
    rationale: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"not an action label: {self.action!r}")


@dataclass(frozen=True)
class StructuredResponse:
    progress_assessment: str
    safety_considerations: str
    actions: tuple[RankedAction, ...]  # best first, distinct labels, 1..3 items
    unknown_items: tuple[str, ...] = ()  # ranked items that named no label, for diagnostics

    def __post_init__(self) -> None:
        labels = self.ranked_labels
        if not 1 <= len(labels) <= MAX_ACTIONS or len(set(labels)) != len(labels):
            raise ValueError(f"need 1..{MAX_ACTIONS} distinct actions, got {labels}")

    @property
    def ranked_labels(self) -> tuple[str, ...]:
        return tuple(a.action for a in self.actions)

    @property
    def complete(self) -> bool:
        """Exactly three distinct valid actions and no unknown items."""
        return len(self.actions) == MAX_ACTIONS and not self.unknown_items

    def to_dict(self) -> dict[str, object]:
        """The canonical JSON shape; ``unknown_items`` is added only when there are some."""
        out: dict[str, object] = {
            "progress_assessment": self.progress_assessment,
            "safety_considerations": self.safety_considerations,
            "next_actions": [{"action": a.action, "rationale": a.rationale} for a in self.actions],
        }
        if self.unknown_items:
            out["unknown_items"] = list(self.unknown_items)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass(frozen=True)
class Unparseable:
    reason: str  # one short line saying why


_Result = StructuredResponse | Unparseable


@dataclass(frozen=True)
class _Item:
    """One ranked item before label mapping."""

    head: str  # the action part, before the rationale separator
    rationale: str
    whole: str  # the whole item text: the mapping fallback
    rank: int | None = None


def parse_response(text: str) -> StructuredResponse | Unparseable:
    """Parse a planner answer, JSON first, then free text; never raises on a ``str``."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)  # reasoning models' scratchpad
    if not text.strip():
        return Unparseable("empty response")
    for value, whole_chunk in _json_values(text):
        result = _from_json(value, allow_list=whole_chunk)
        if result is not None:
            return result
    return _parse_text(text)


def _build(progress: str, safety: str, items: list[_Item], unknown: tuple[str, ...] = ()) -> _Result:
    """Map items to labels: explicit ranks reorder, duplicates keep the first, stop at three."""
    if not items:
        return Unparseable("no ranked action items found")
    ranks = [i.rank for i in items]
    if None not in ranks and len(set(ranks)) == len(ranks):
        items = sorted(items, key=lambda i: i.rank or 0)
    actions: dict[str, RankedAction] = {}
    unknowns = dict.fromkeys(u.strip() for u in unknown if u.strip())
    for item in items:
        resolved = _resolve(item)
        if not resolved and (item.head or item.whole).strip():
            unknowns.setdefault((item.head or item.whole).strip())
        for label, rationale in resolved:
            if len(actions) < MAX_ACTIONS:
                actions.setdefault(label, RankedAction(label, rationale.strip()))
        if len(actions) == MAX_ACTIONS:
            break
    if not actions:
        names = " ".join("; ".join(unknowns).split())
        return Unparseable(f"no action label found among ranked items: {names}"[:160])
    return StructuredResponse(progress.strip(), safety.strip(), tuple(actions.values()), tuple(unknowns))


def _resolve(item: _Item) -> list[tuple[str, str]]:
    """The labels an item names: one, several for a bare list ("Dissection, Coagulation"), or none."""
    parts = [p.strip() for p in re.split(r"[,;|>→]", item.whole) if p.strip(" -.*_")]
    listed = [to_label(p) for p in parts]
    if len(parts) > 1 and all(lab and _bare(p, lab) for p, lab in zip(parts, listed, strict=True)):
        return [(lab, "") for lab in listed if lab]
    label = to_label(item.head) or to_label(item.whole)
    return [] if label is None else [(label, item.rationale)]


def _bare(part: str, label: str) -> bool:
    """The part is just a label or a one-word synonym ("clipping"), not a phrase with a verb."""
    norm = normalize_text(part.strip("-"))
    return norm == normalize_text(label) or len(norm.split()) == 1


# ----------------------------------------------------------------------------------------- JSON

_FENCE: Final = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
_ACTION_KEYS: Final = frozenset({"action", "name", "label", "nextaction", "actionname", "step", "task"})
_WHY_KEYS: Final = frozenset({"rationale", "reason", "reasoning", "justification", "explanation", "why"})
_RANK_KEYS: Final = frozenset({"rank", "ranking", "position", "priority", "order"})
_ACTIONS_KEYS: Final = frozenset({"nextsteps", "steps", "ranking", "prediction", "predictions"})


def _json_values(text: str) -> Iterator[tuple[object, bool]]:
    """Decoded JSON-ish values in the text; the flag says the value was a whole chunk."""
    chunks = [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        chunks.append(text[start : end + 1])
    for chunk in chunks:
        if (value := _load(chunk)) is not None:
            yield value, True
    decoder = json.JSONDecoder()
    for match in itertools.islice(re.finditer(r"\{", text), 20):
        try:
            yield decoder.raw_decode(text, match.start())[0], False
        except (ValueError, RecursionError):
            continue


def _load(chunk: str) -> object:
    """JSON, JSON with trailing commas, or (short) single-quoted Python literals; ``None`` if none."""
    if not chunk.startswith(("{", "[")):
        return None
    for candidate in (chunk, re.sub(r",(\s*[}\]])", r"\1", chunk)):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            pass
    try:
        return ast.literal_eval(chunk) if len(chunk) <= 20_000 else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _key(key: object) -> str:
    return re.sub(r"[^a-z]", "", str(key).casefold()) if isinstance(key, str | int) else ""


def _role(key: object) -> str:
    k = _key(key)
    if "progress" in k or k in ("assessment", "status"):
        return "progress"
    if "safety" in k or k in ("risk", "risks", "concerns"):
        return "safety"
    if "unknown" in k:
        return "unknown"
    if "action" in k or "recommend" in k or k in _ACTIONS_KEYS:
        return "actions"
    return "rationale" if k in _WHY_KEYS else ""


def _from_json(value: object, allow_list: bool, depth: int = 0) -> _Result | None:
    """A response from decoded JSON, or ``None`` when the value is not a planner response."""
    if isinstance(value, list) and allow_list:
        return _build("", "", _json_items(value))
    if not isinstance(value, dict):
        return None
    fields: dict[str, object] = {}
    for key, val in value.items():
        fields.setdefault(_role(key), val)
    if "actions" not in fields:  # maybe wrapped: {"response": {...}}
        nested = (_from_json(v, False, depth + 1) for v in value.values() if depth < 2)
        return next((r for r in nested if r is not None), None)
    items = _json_items(fields["actions"])
    if len(items) == 1 and not items[0].rationale and "rationale" in fields:
        items = [replace(items[0], rationale=_as_text(fields["rationale"]))]
    unknown = fields.get("unknown")
    unknowns = tuple(_as_text(u) for u in (unknown if isinstance(unknown, list) else [unknown]))
    return _build(_as_text(fields.get("progress")), _as_text(fields.get("safety")), items, unknowns)


def _json_items(value: object, depth: int = 0) -> list[_Item]:
    """Items from a string (free-text list), a list, an item object or an object of ranked items."""
    if isinstance(value, str):
        return _section_items(value.splitlines(), plain_ok=True)
    if value is None or depth > 3:
        return []
    if isinstance(value, list):  # one item per string, whatever it holds
        return [
            i for v in value for i in ([_line_item(v)] if isinstance(v, str) else _json_items(v, depth + 1))
        ]
    if not isinstance(value, dict):
        return [_line_item(str(value))]
    keys = {_key(k): v for k, v in value.items()}
    action_key = next((k for k in keys if k in _ACTION_KEYS), None)
    if action_key is None:  # {"1": {...}, "2": {...}}: the values in order, ranked by their keys
        ranked = [(_json_items(v, depth + 1), _number(k)) for k, v in value.items()]
        return [replace(i, rank=r) if len(its) == 1 else i for its, r in ranked for i in its]
    item = _line_item(_as_text(keys[action_key]))
    why = next((_as_text(v) for k, v in keys.items() if k in _WHY_KEYS), "")
    rank = next((_number(v) for k, v in keys.items() if k in _RANK_KEYS), None)
    return [replace(item, rationale=why or item.rationale, rank=item.rank if rank is None else rank)]


def _number(value: object) -> int | None:
    digits = re.findall(r"[0-9]+", str(value)[:20]) if isinstance(value, str | int) else []
    return int(digits[0]) if len(digits) == 1 else None


def _as_text(value: object, depth: int = 0) -> str:
    if value is None or depth > 3:
        return ""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return "\n".join(t for t in (_as_text(v, depth + 1) for v in value) if t)
    return str(value).strip()


# ------------------------------------------------------------------------------------ free text

_SECTIONS: Final = {
    "progress": r"(?:(?:surgical|current|overall) )?(?:progress|status)(?: (?:assessment|so far|summary))?"
    r"|assessment",
    "safety": r"(?:(?:key|important|potential) )?safety(?: (?:considerations?|concerns?|notes?|risks?))?"
    r"|risks?",
    "actions": r"(?:top (?:[0-9]|three) )?(?:(?:ranked|recommended|predicted|suggested|likely) )?(?:next )?"
    r"(?:actions?|steps?)(?: (?:ranked|ranking|predictions?))?"
    r"|recommendations?|(?:final )?answer|predictions?",
    "other": r"summary|conclusion|notes?|reasoning|explanation|analysis|observations?|context"
    r"|(?:current )?phase",
}
_RANKED: Final = re.compile(
    r"^[-*+•·_\s]*(top|rank|action|option)[\s\-_#]*(\d{1,2})(?!\d)[\s*_:.)\-–—]*", re.I
)
_NUMBERED: Final = re.compile(r"^[*_]*\(?(\d{1,2})(?:[.)](?!\d)|:|\s+[-–—])[\s*_]*")
_BULLET: Final = re.compile(r"^[-*+•·]\s+")
_SEPARATOR: Final = re.compile(r"\s[-–—]\s|[–—]|:|\(|;|\.\s|,\s|\sbecause\s|\s\|\s")
_KEY_PREFIX: Final = re.compile(r"^(?:next\s+)?(?:action|label|answer|prediction)\s*:\s*", re.I)
_WHY_PREFIX: Final = re.compile(
    r"^(?:rationale|reasoning|reason|justification|why|because)\b\s*[:\-–—]?\s*", re.I
)


def _parse_text(text: str) -> _Result:
    """Split into sections by their headings, then read the ranked items."""
    sections: dict[str, list[str]] = {k: [] for k in ("preamble", "progress", "safety", "actions", "other")}
    current, seen = "preamble", set()
    for raw in text.splitlines():
        line = raw.strip().lstrip(">").strip()
        if not line or line.startswith("```"):
            continue
        if (heading := _heading(line, current)) is not None:
            current, line = heading
            seen.add(current)
        elif (m := _RANKED.match(line)) and m.group(1).lower() in ("top", "rank", "action"):
            current = "actions"  # "Top-1: ..." opens the ranked list wherever it stands
            seen.add(current)
        if line:
            sections[current].append(line.lstrip("#").strip())
    items = _section_items(sections["actions"], plain_ok=True)
    if not items and "actions" not in seen:  # a bare list, or a bare one-line answer
        items = _section_items(sections["preamble"], plain_ok=not seen and len(sections["preamble"]) == 1)
    return _build("\n".join(sections["progress"]), "\n".join(sections["safety"]), items)


def _heading(line: str, current: str) -> tuple[str, str] | None:
    """(section, rest of the line) when the line opens a section ("**Next Actions:**", "### Safety")."""
    body = line.lstrip("#").strip()
    head, colon, rest = body.partition(":")
    name = re.sub(r"^[0-9]+ ", "", normalize_text(head))
    section = next((s for s, pattern in _SECTIONS.items() if re.fullmatch(pattern, name)), None)
    if section is None and line.startswith("#") and not colon and to_label(body) is None:
        section = "other"
    rest = rest.strip().strip("*_").strip()
    if section == "other" and current != "preamble" and (current != "actions" or rest):
        return None  # "Note: ..." inside a section is that section's content
    return None if section is None else (section, rest)


def _mark(line: str) -> tuple[str, int | None, str]:
    """(kind, rank, body) where kind is ranked, numbered, bullet or plain."""
    for kind, pattern in (("ranked", _RANKED), ("numbered", _NUMBERED)):
        if m := pattern.match(line):
            return kind, int(m.group(m.lastindex or 0)), line[m.end() :]
    if m := _BULLET.match(line):
        return "bullet", None, line[m.end() :]
    return "plain", None, line


def _section_items(lines: list[str], plain_ok: bool) -> list[_Item]:
    """Ranked items of a section; other lines continue the previous item's rationale."""
    split = [p.strip() for line in lines for p in _split_inline(line) if p.strip()]
    marked = [_mark(line) for line in split]
    kinds = {kind for kind, _, _ in marked}
    wanted = ({"ranked", "numbered"} & kinds) or ({"bullet"} & kinds) or ({"plain"} if plain_ok else set())
    items: list[_Item] = []
    for kind, rank, body in marked:
        item = _split_item(body, rank)
        if kind in wanted and not _WHY_PREFIX.match(item.whole) and (kind != "plain" or _plain_item(item)):
            items.append(item)
        elif items:
            extra = _clean_rationale(_unmark(body))
            items[-1] = replace(items[-1], rationale=f"{items[-1].rationale} {extra}".strip())
    return items


def _split_inline(line: str) -> list[str]:
    """'1. Dissection 2. Coagulation' on one line: one line per number."""
    if len(re.findall(r"(?:^|(?<=\s))\(?[0-9]{1,2}[.)]\s", line)) < 2:
        return [line]
    return re.split(r"(?<=\s)(?=\(?[0-9]{1,2}[.)]\s)", line)


def _plain_item(item: _Item) -> bool:
    """An unmarked line is an item when it names an action or is short; long prose is a rationale."""
    return not item.whole.endswith(":") and (to_label(item.head) is not None or len(item.whole.split()) <= 4)


def _line_item(line: str) -> _Item:
    _, rank, body = _mark(line.strip())
    return _split_item(body, rank)


def _split_item(body: str, rank: int | None) -> _Item:
    """Split "Dissection - why" / "**Dissection**: why" / "Dissection (why)" into head and rationale."""
    text = _KEY_PREFIX.sub("", _unmark(body))
    sep = _SEPARATOR.search(text)
    head, rationale = (text[: sep.start()], text[sep.end() :]) if sep else (text, "")
    if sep and sep.group() == "(" and rationale.endswith(")"):
        rationale = rationale[:-1]
    return _Item(head.strip().strip("*_.\"'").strip(), _clean_rationale(rationale), text.strip(), rank)


def _unmark(text: str) -> str:
    return re.sub(r"\*\*|__|`", "", text).strip().strip("*_").strip()


def _clean_rationale(text: str) -> str:
    return _WHY_PREFIX.sub("", text.strip().lstrip("-–—:;,.) ")).strip()
