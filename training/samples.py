"""Training samples: the CholecT50-SAP planning samples of the TRAINING videos as planner chats.

Each sample becomes the chat the planner itself sends (``APPrompts.plan``): the system message
(role + knowledge base) and the user message with the NHFM memory, IndirNHFM (the current clip's
caption, "no description available" unless a captions file gives one) or DirNHFM (the clip's
near frames as image parts, read from ``frame_root``). The test videos never appear: they are
the paper's held-out split, used neither for training nor for choosing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from planner.memory import DEFAULT_MAX_DISTANT, DEFAULT_MAX_KEYFRAMES, NHFMemory
from planner.prompts import APPrompts, Message, Variant
from training.cholect50 import TEST_VIDEOS, Annotations, PlanningSample
from training.exceptions import TrainingError

log = structlog.get_logger(__name__)

Captions = Mapping[tuple[str, str], str]


class SampleError(TrainingError, ValueError):
    """Training samples cannot be built as asked (a captions file, missing frames)."""


@dataclass(frozen=True)
class TrainingSample:
    """One planning sample as a chat (system + user), with its ground truth."""

    source: PlanningSample
    variant: Variant
    messages: tuple[Message, ...]
    caption: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.source.key

    def meta(self) -> dict[str, Any]:
        s = self.source
        return {
            "video": s.video,
            "clip": s.clip,
            "target": s.target,
            "next_action": s.next_action,
            "distant": list(s.distant),
            "nearest": s.nearest,
            "caption": self.caption,
            "variant": self.variant,
        }


@dataclass(frozen=True)
class SampleSet:
    samples: tuple[TrainingSample, ...]
    skipped: tuple[tuple[str, str, str], ...]  # (video, clip, why)


def memory_of(
    sample: PlanningSample,
    *,
    caption: str | None = None,
    keyframes: tuple[str, ...] = (),
    max_distant: int = DEFAULT_MAX_DISTANT,
    max_keyframes: int = DEFAULT_MAX_KEYFRAMES,
) -> NHFMemory:
    """The sample's own history (as the paper used it), with C_t or v_t attached."""
    return NHFMemory.from_history(
        sample.distant,
        sample.nearest,
        caption=caption,
        keyframes=keyframes,
        max_distant=max_distant,
        max_keyframes=max_keyframes,
    )


def training_samples(
    data: Annotations,
    variant: Variant = "indirect",
    *,
    captions: Captions | None = None,
    frame_root: Path | None = None,
    max_distant: int = DEFAULT_MAX_DISTANT,
    max_keyframes: int = DEFAULT_MAX_KEYFRAMES,
) -> SampleSet:
    """Chats for every planning sample of the training videos; DirNHFM skips samples without frames."""
    if variant not in ("indirect", "direct"):
        raise SampleError(f"variant must be 'indirect' or 'direct', got {variant!r}")
    built: list[TrainingSample] = []
    skipped: list[tuple[str, str, str]] = []
    for s in data.split("train"):
        if s.video in TEST_VIDEOS:  # the split already excludes them; never let one through
            raise AssertionError(f"test video {s.video} in the training split")
        caption = (captions or {}).get(s.key)
        frames: tuple[str, ...] = ()
        if variant == "direct":
            frames, why = _frames(s, frame_root)
            if why:
                skipped.append((s.video, s.clip, why))
                continue
        memory = memory_of(
            s, caption=caption, keyframes=frames, max_distant=max_distant, max_keyframes=max_keyframes
        )
        built.append(TrainingSample(s, variant, APPrompts.plan(memory, variant).messages, caption))
    for video, clip, why in skipped[:5]:
        log.warning("samples.skipped", video=video, clip=clip, reason=why)
    if skipped:
        log.warning("samples.skipped_total", skipped=len(skipped), kept=len(built))
    if not built:
        first = f" (first: {skipped[0][0]}/{skipped[0][1]}: {skipped[0][2]})" if skipped else ""
        raise SampleError(f"no training sample could be built{first}")
    return SampleSet(tuple(built), tuple(skipped))


def _frames(sample: PlanningSample, root: Path | None) -> tuple[tuple[str, ...], str]:
    """Absolute paths of the sample's near frames, or why they cannot be used."""
    if not sample.near_frames:
        return (), "the sample lists no near frames"
    base = root if root is not None else Path.cwd()
    paths = [(base / f).resolve() for f in sample.near_frames]
    missing = [f for f, p in zip(sample.near_frames, paths, strict=True) if not p.is_file()]
    if missing:
        where = f"under {root}" if root is not None else "relative to the working folder (no --frame-root)"
        return (), f"{len(missing)} of {len(paths)} near frames missing {where} (first: {missing[0]})"
    return tuple(str(p) for p in paths), ""


def load_captions(path: Path) -> dict[tuple[str, str], str]:
    """Captions C_t per sample: JSON ``{"VID01/5": "..."}`` or JSONL ``{"video", "clip", "caption"}``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise SampleError(f"captions file {path}: cannot read ({type(exc).__name__})") from None
    out: dict[tuple[str, str], str] = {}
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        for key, caption in whole.items():
            video, sep, clip = str(key).partition("/")
            if not sep or not isinstance(caption, str):
                raise SampleError(f"captions file {path}: entry {key!r} must be 'VIDxx/CLIP': \"caption\"")
            out[(video, clip)] = caption
        return out
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SampleError(f"captions file {path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str | int) for k in ("video", "clip")):
            raise SampleError(f"captions file {path}:{n}: expected {{'video', 'clip', 'caption'}}")
        if not isinstance(row.get("caption"), str):
            raise SampleError(f"captions file {path}:{n}: 'caption' must be a string")
        out[(str(row["video"]), str(row["clip"]))] = row["caption"]
    return out
