"""Every key of the configuration tree is read by the code it configures, or is documented as reserved.

The walk covers the whole tree (pydantic sections and the dataclass settings inside them). A key
``a.b.c`` counts as consumed when a shipped module reads the attribute ``.c`` (not as ``self.c``
in the module that declares it: a validator is not a consumer) and names its section (``b``, or
the section's class or one of its bases). Behaviour tests for the
keys that matter most live beside their code (e.g. ``planner.memory.*`` in the live pipeline).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pydantic import BaseModel

from training.config import AppConfig

ROOT = Path(__file__).resolve().parents[1]

#: Keys parsed but not (yet) acted on, each with the reason. Empty is the goal.
RESERVED: dict[str, str] = {}

#: Keys their own section turns into something else through a method, and that method's name
#: (the method must be called outside the declaring module).
VIA_METHOD: dict[str, str] = {
    "training.sft.global_batch_size": "accumulation",  # → gradient accumulation steps
    "training.grpo.global_batch_size": "accumulation",
}


def _leaves(model: type, prefix: str = "") -> list[tuple[str, type]]:
    """(dotted key, the class that declares it) for every leaf of the tree."""
    out: list[tuple[str, type]] = []
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and (issubclass(sub, BaseModel) or dataclasses.is_dataclass(sub)):
                out += _leaves(sub, f"{prefix}{name}.")
            else:
                out.append((prefix + name, model))
    elif dataclasses.is_dataclass(model):
        out += [(prefix + f.name, model) for f in dataclasses.fields(model)]
    return out


def _sources() -> dict[Path, str]:
    files = [p for pkg in ("planner", "streamer", "training") for p in (ROOT / pkg).rglob("*.py")]
    return {p: p.read_text() for p in files if "benchmarks" not in p.parts}


def test_every_key_is_consumed_or_reserved() -> None:
    sources = _sources()
    unread = []
    for key, owner in _leaves(AppConfig):
        if key in RESERVED:
            continue
        if key in VIA_METHOD:
            key = f"{key.rsplit('.', 1)[0]}.{VIA_METHOD[key]}"
        parts = key.split(".")
        leaf, section = parts[-1], parts[-2] if len(parts) > 1 else ""
        declared_in = Path(__import__(owner.__module__, fromlist=["_"]).__file__ or "")
        reads_leaf = re.compile(rf"(?<!\bself)\.{re.escape(leaf)}\b")
        reads_leaf_anywhere = re.compile(rf"\.{re.escape(leaf)}\b")
        classes = [c.__name__ for c in owner.__mro__ if c not in (object, BaseModel)]
        names_section = re.compile(rf"\b({'|'.join(map(re.escape, [section, *classes]))})\b")
        if not any(
            (reads_leaf if path == declared_in else reads_leaf_anywhere).search(text)
            and names_section.search(text)
            for path, text in sources.items()
        ):
            unread.append(key)
    assert not unread, f"config keys that nothing reads (use them, remove them, or reserve them): {unread}"


def test_reserved_keys_exist() -> None:
    keys = {k for k, _ in _leaves(AppConfig)}
    assert set(RESERVED) <= keys and set(VIA_METHOD) <= keys
