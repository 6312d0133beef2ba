"""Loader and validator for the CholecT50-SAP annotation file, and the paper's split.

Format (see ../shared/data/README.md): ``{"VIDxx": {"<clip index>": clip, ...}, ...}``; every
clip has ``Action``, ``Action_Reg``, ``Frame_id`` (start second) and ``Test`` (true when the
clip is a planning sample); planning samples also carry ``Distant Actions``,
``Nearest Action``, ``History``, ``Near Frames`` and ``Next Action``.

Validation names the video, the clip and the field of the first problem it finds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.actions import is_label
from training.exceptions import AnnotationError

#: The paper's 15 test videos (CholecT50's official validation + test videos).
TEST_VIDEOS: tuple[str, ...] = (
    "VID06", "VID08", "VID10", "VID12", "VID14", "VID29", "VID32", "VID42",
    "VID50", "VID51", "VID73", "VID74", "VID78", "VID80", "VID111",
)  # fmt: skip

_VIDEO_ID = re.compile(r"VID\d+")


@dataclass(frozen=True)
class Clip:
    video: str
    index: int
    action: str
    action_reg: str | None  # the second label; None where it names no action ("Inexistence")
    start_s: int
    is_sample: bool


@dataclass(frozen=True)
class PlanningSample:
    """Predict ``target`` (the clip's action) from the distant and nearest actions."""

    video: str
    clip: str
    target: str
    distant: tuple[str, ...]
    nearest: str | None
    next_action: str | None  # None when this is the video's last clip
    start_s: int
    history_starts: tuple[int, ...]
    near_frames: tuple[str, ...]

    @property
    def history(self) -> tuple[str, ...]:
        return (*self.distant, self.nearest) if self.nearest else self.distant

    @property
    def key(self) -> tuple[str, str]:
        return (self.video, self.clip)


@dataclass(frozen=True)
class Annotations:
    videos: dict[str, tuple[Clip, ...]]
    samples: tuple[PlanningSample, ...]

    def sequences(self, videos: Iterable[str]) -> list[tuple[str, ...]]:
        """The ``Action`` label sequence of each named video, clips in order."""
        return [tuple(c.action for c in self.videos[v]) for v in videos]

    def samples_of(self, videos: Iterable[str]) -> tuple[PlanningSample, ...]:
        wanted = set(videos)
        return tuple(s for s in self.samples if s.video in wanted)

    @property
    def test_videos(self) -> tuple[str, ...]:
        return tuple(v for v in self.videos if v in TEST_VIDEOS)

    @property
    def train_videos(self) -> tuple[str, ...]:
        return tuple(v for v in self.videos if v not in TEST_VIDEOS)

    def split(self, name: str) -> tuple[PlanningSample, ...]:
        if name == "test":
            return self.samples_of(self.test_videos)
        if name == "train":
            return self.samples_of(self.train_videos)
        if name == "all":
            return self.samples
        raise ValueError(f"split must be 'train', 'test' or 'all', got {name!r}")


def load_annotations(path: Path | str) -> Annotations:
    """Read and validate the annotation file; raise AnnotationError naming the first problem."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AnnotationError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise AnnotationError(f"{path}: is a directory, expected the annotation JSON file") from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return parse_annotations(raw, source=str(path))


def parse_annotations(raw: Any, source: str = "annotations") -> Annotations:
    if not isinstance(raw, dict) or not raw:
        raise AnnotationError(f"{source}: expected a non-empty object of videos")
    videos: dict[str, tuple[Clip, ...]] = {}
    samples: list[PlanningSample] = []
    for video in sorted(raw, key=_video_number):
        clips_raw = raw[video]
        if not _VIDEO_ID.fullmatch(video):
            raise AnnotationError(f"{source}: video id {video!r} is not of the form VIDnn")
        if not isinstance(clips_raw, dict) or not clips_raw:
            raise AnnotationError(f"{source}: {video}: expected a non-empty object of clips")
        clips, video_samples = _parse_video(video, clips_raw, source)
        videos[video] = clips
        samples.extend(video_samples)
    return Annotations(videos=videos, samples=tuple(samples))


def _video_number(video: str) -> tuple[int, str]:
    digits = video[3:]
    return (int(digits), video) if digits.isdigit() else (10**9, video)


def _parse_video(
    video: str, clips_raw: dict[str, Any], source: str
) -> tuple[tuple[Clip, ...], list[PlanningSample]]:
    bad_keys = [k for k in clips_raw if not (isinstance(k, str) and k.isdigit())]
    if bad_keys:
        raise AnnotationError(f"{source}: {video}: clip key {bad_keys[0]!r} is not an integer")
    keys = sorted(clips_raw, key=int)
    indices = [int(k) for k in keys]
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise AnnotationError(f"{source}: {video}: clip keys are not contiguous ({indices})")
    clips: list[Clip] = []
    samples: list[PlanningSample] = []
    for key in keys:
        where = f"{source}: {video} clip {key}"
        c = clips_raw[key]
        if not isinstance(c, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(c).__name__}")
        clip = Clip(
            video=video,
            index=int(key),
            action=_label(c, "Action", where),
            action_reg=_second_label(c, where),
            start_s=_int(c, "Frame_id", where),
            is_sample=_bool(c, "Test", where),
        )
        if clips:
            prev = clips[-1]
            if clip.start_s <= prev.start_s:
                raise AnnotationError(
                    f"{where}: field 'Frame_id': {clip.start_s} is not after the previous clip's"
                )
            if clip.action == prev.action:
                raise AnnotationError(f"{where}: field 'Action': {clip.action!r} repeats the previous clip's")
        clips.append(clip)
        if clip.is_sample:
            samples.append(_parse_sample(clip, c, where))
    return tuple(clips), samples


def _parse_sample(clip: Clip, c: dict[str, Any], where: str) -> PlanningSample:
    distant = c.get("Distant Actions")
    if not isinstance(distant, list):
        raise AnnotationError(f"{where}: field 'Distant Actions': expected a list, got {distant!r}")
    for item in distant:
        if not isinstance(item, str) or not is_label(item):
            raise AnnotationError(f"{where}: field 'Distant Actions': {item!r} is not an action label")
    nearest = _optional_label(c, "Nearest Action", where)
    next_action = _optional_label(c, "Next Action", where)
    if nearest is None and distant:
        raise AnnotationError(f"{where}: field 'Nearest Action': empty although 'Distant Actions' is not")
    history = c.get("History")
    if not isinstance(history, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in history
    ):
        raise AnnotationError(f"{where}: field 'History': expected a list of frame numbers, got {history!r}")
    frames = c.get("Near Frames")
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise AnnotationError(f"{where}: field 'Near Frames': expected a list of paths, got {frames!r}")
    return PlanningSample(
        video=clip.video,
        clip=str(clip.index),
        target=clip.action,
        distant=tuple(distant),
        nearest=nearest,
        next_action=next_action,
        start_s=clip.start_s,
        history_starts=tuple(history),
        near_frames=tuple(frames),
    )


def _label(c: dict[str, Any], field: str, where: str) -> str:
    if field not in c:
        raise AnnotationError(f"{where}: field {field!r} is missing")
    value = c[field]
    if not isinstance(value, str) or not is_label(value):
        raise AnnotationError(f"{where}: field {field!r}: {value!r} is not an action label")
    return value


def _second_label(c: dict[str, Any], where: str) -> str | None:
    if "Action_Reg" not in c:
        raise AnnotationError(f"{where}: field 'Action_Reg' is missing")
    value = c["Action_Reg"]
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: field 'Action_Reg': expected a string, got {value!r}")
    return value if is_label(value) else None


def _optional_label(c: dict[str, Any], field: str, where: str) -> str | None:
    if field not in c:
        raise AnnotationError(f"{where}: field {field!r} is missing")
    value = c[field]
    if value == "":
        return None
    if not isinstance(value, str) or not is_label(value):
        raise AnnotationError(f'{where}: field {field!r}: {value!r} is not an action label or ""')
    return value


def _int(c: dict[str, Any], field: str, where: str) -> int:
    value = c.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AnnotationError(f"{where}: field {field!r}: expected a frame number >= 0, got {value!r}")
    return value


def _bool(c: dict[str, Any], field: str, where: str) -> bool:
    value = c.get(field)
    if not isinstance(value, bool):
        raise AnnotationError(f"{where}: field {field!r}: expected true or false, got {value!r}")
    return value
