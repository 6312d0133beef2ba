"""Train/test splits by video: the paper's (default) or one read from ``--split-file FILE``.

A split file is JSON ``{"train": ["VID01", ...], "test": ["VID06", ...]}``. Fitting and choosing
use only ``train``; ``test`` is scored afterwards. Every id must be a video of the annotation file,
the two lists must not overlap, and ``train`` must not be empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.cholect50 import Annotations, PlanningSample
from training.exceptions import UsageError


@dataclass(frozen=True)
class Split:
    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def samples(self, data: Annotations, which: str) -> tuple[PlanningSample, ...]:
        if which == "train":
            return data.samples_of(self.train)
        if which == "test":
            return data.samples_of(self.test)
        if which == "all":
            return data.samples_of((*self.train, *self.test))
        raise ValueError(f"split part must be 'train', 'test' or 'all', got {which!r}")


def paper_split(data: Annotations) -> Split:
    return Split("paper", data.train_videos, data.test_videos)


def load_split(path: Path | str | None, data: Annotations) -> Split:
    """The paper's split when ``path`` is None, else the file's (a UsageError names any problem)."""
    if path is None:
        return paper_split(data)
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--split-file {path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise UsageError(f"--split-file {path}: not a JSON file ({exc})") from None
    return parse_split(raw, data, source=f"--split-file {path}", name=path.stem)


def parse_split(raw: object, data: Annotations, source: str = "split", name: str = "custom") -> Split:
    if not isinstance(raw, dict) or set(raw) - {"train", "test"} or "train" not in raw:
        raise UsageError(f'{source}: expected {{"train": [video ids], "test": [video ids]}}')
    parts: dict[str, tuple[str, ...]] = {}
    for key in ("train", "test"):
        ids = raw.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
            raise UsageError(f"{source}: {key!r} must be a list of video ids, got {ids!r}")
        unknown = [v for v in ids if v not in data.videos]
        if unknown:
            raise UsageError(f"{source}: {key!r} names {unknown[0]!r}, not a video of the annotations")
        if len(set(ids)) != len(ids):
            raise UsageError(f"{source}: {key!r} repeats a video id")
        order = {v: i for i, v in enumerate(data.videos)}
        parts[key] = tuple(sorted(ids, key=order.__getitem__))
    overlap = sorted(set(parts["train"]) & set(parts["test"]))
    if overlap:
        raise UsageError(f"{source}: {overlap[0]!r} is in both 'train' and 'test'")
    if not parts["train"]:
        raise UsageError(f"{source}: 'train' is empty")
    return Split(name, parts["train"], parts["test"])
