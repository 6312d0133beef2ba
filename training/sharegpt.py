"""Export distilled chats to LLaMA-Factory's sharegpt format (its "OpenAI format" variant).

LLaMA-Factory reads ``DIR/dataset_info.json`` and the data file it names. Our chats already use
``role``/``content`` messages with the system prompt first, which LLaMA-Factory takes with the tags
``role_tag="role"``, ``content_tag="content"``, ``user_tag="user"``, ``assistant_tag="assistant"``,
``system_tag="system"``. DirNHFM image parts become ``<image>`` placeholders in the user text and
an ``images`` column of file paths, one per placeholder, in order. Then, in LLaMA-Factory,
``dataset_dir: DIR`` and ``dataset: NAME`` rerun the paper's recipe on our data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.atomic import atomic_write_json
from training.exceptions import TrainingError

DEFAULT_NAME = "llm_sap_sft"


class ExportError(TrainingError):
    """The export folder holds a dataset_info.json that cannot be updated safely."""


TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def to_sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    """One chat record -> ``{"messages": [{"role", "content": str}], "images"?: [...]}``."""
    messages = []
    images: list[str] = []
    for m in record["messages"]:
        content = m["content"]
        if isinstance(content, list):
            pieces = []
            for part in content:
                if part.get("type") == "image":
                    pieces.append("<image>")
                    images.append(str(part["image"]))
                else:
                    pieces.append(str(part.get("text", "")))
            content = "".join(pieces)
        messages.append({"role": m["role"], "content": str(content)})
    row: dict[str, Any] = {"messages": messages}
    if images:
        row["images"] = images
    return row


def dataset_entry(file_name: str, with_images: bool) -> dict[str, Any]:
    columns = {"messages": "messages", **({"images": "images"} if with_images else {})}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns, "tags": dict(TAGS)}


def export_sharegpt(records: Sequence[dict[str, Any]], folder: Path, name: str = DEFAULT_NAME) -> Path:
    """Write ``folder/NAME.json`` and add (or replace) the ``NAME`` entry of ``folder/dataset_info.json``."""
    folder = Path(folder)
    rows = [to_sharegpt(r) for r in records]
    file_name = f"{name}.json"
    info_path = folder / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.is_file():  # keep the other datasets listed there; never overwrite a broken file
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ExportError(f"{info_path} exists but is not valid JSON; fix or remove it") from None
        if not isinstance(info, dict):
            raise ExportError(f"{info_path} exists but is not a JSON object; fix or remove it")
    info[name] = dataset_entry(file_name, any("images" in r for r in rows))
    atomic_write_json(folder / file_name, rows)
    atomic_write_json(info_path, info)
    return folder / file_name
