"""The timeline oracle: reads the actions from an annotation instead of the pixels.

This is the paper's setting (history labels are ground truth). Two formats:
- CSV with a header ``start_s,action`` and one row per clip, starts increasing;
- the CholecT50-SAP JSON with a video id, ``total_video_info.json#VID06``: clip starts are the
  ``Frame_id`` values (frames at 1 fps, so seconds).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.actions import ACTIONS, is_label, to_label
from streamer.exceptions import TimelineError
from streamer.frames import Frame


@dataclass(frozen=True)
class Timeline:
    starts: tuple[float, ...]
    actions: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.starts or len(self.starts) != len(self.actions):
            raise TimelineError(f"{self.source}: a timeline needs at least one (start_s, action) row")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise TimelineError(f"{self.source}: start times must increase")

    def action_at(self, t_s: float) -> str:
        i = bisect.bisect_right(self.starts, t_s) - 1
        return self.actions[max(i, 0)]

    def rows(self) -> list[tuple[float, str]]:
        return list(zip(self.starts, self.actions, strict=True))


def parse_csv_timeline(text: str, source: str = "timeline") -> Timeline:
    reader = csv.reader(io.StringIO(text))
    rows = [r for r in reader if r and any(c.strip() for c in r)]
    if not rows:
        raise TimelineError(f"{source}: empty timeline (expected a 'start_s,action' header and rows)")
    header = [c.strip().lower() for c in rows[0]]
    if header[:2] != ["start_s", "action"]:
        raise TimelineError(f"{source}: line 1: header must be 'start_s,action', got {','.join(rows[0])!r}")
    starts: list[float] = []
    actions: list[str] = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) < 2:
            raise TimelineError(f"{source}: line {n}: expected 'start_s,action', got {','.join(row)!r}")
        try:
            start = float(row[0])
        except ValueError:
            raise TimelineError(f"{source}: line {n}: start_s {row[0]!r} is not a number") from None
        if not math.isfinite(start) or start < 0:
            raise TimelineError(f"{source}: line {n}: start_s {row[0]!r} must be a finite number >= 0")
        label = row[1].strip() if is_label(row[1].strip()) else to_label(row[1])
        if label is None:
            raise TimelineError(f"{source}: line {n}: {row[1]!r} is not an action ({', '.join(ACTIONS)})")
        if starts and start <= starts[-1]:
            raise TimelineError(f"{source}: line {n}: start_s {start:g} is not after {starts[-1]:g}")
        starts.append(start)
        actions.append(label)
    return Timeline(tuple(starts), tuple(actions), source)


def timeline_from_cholect50(raw: object, video: str, source: str) -> Timeline:
    if not isinstance(raw, dict) or video not in raw or not isinstance(raw[video], dict):
        raise TimelineError(f"{source}: video {video!r} not found")
    clips = raw[video]
    try:
        keys = sorted(clips, key=int)
        rows = [(float(clips[k]["Frame_id"]), str(clips[k]["Action"])) for k in keys]
    except (KeyError, TypeError, ValueError) as exc:
        raise TimelineError(f"{source}#{video}: malformed clip ({exc})") from None
    for (_start, action), key in zip(rows, keys, strict=True):
        if not is_label(action):
            raise TimelineError(f"{source}#{video} clip {key}: {action!r} is not an action label")
    return Timeline(tuple(r[0] for r in rows), tuple(r[1] for r in rows), f"{source}#{video}")


def load_timeline(spec: str | Path) -> Timeline:
    """``path.csv`` or ``path.json#VIDxx``."""
    path_text, _, video = str(spec).partition("#")
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheet programs write a UTF-8 BOM
    except FileNotFoundError:
        raise TimelineError(f"timeline {path} not found") from None
    except UnicodeDecodeError:
        raise TimelineError(f"timeline {path}: not UTF-8 text (a binary file?)") from None
    except OSError as exc:  # a directory, no permission
        raise TimelineError(f"timeline {path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if path.suffix.lower() == ".json":
        if not video:
            raise TimelineError(f"timeline {path}: a CholecT50-SAP JSON needs a video id, e.g. {path}#VID06")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TimelineError(f"timeline {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return timeline_from_cholect50(raw, video, str(path))
    return parse_csv_timeline(text, str(path))


class TimelineRecognizer:
    """One-hot probabilities of the action the timeline names at each frame's stream time."""

    name = "timeline"
    needs_pixels = False
    has_ground_truth = True  # reads the annotated labels: clean one-hot input, no noise to smooth

    def __init__(self, timeline: Timeline, rate_hz: float = 2.0) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.timeline = timeline
        self.rate_hz = rate_hz

    def predict(self, frames: Sequence[Frame]) -> list[dict[str, float]]:
        out = []
        for frame in frames:
            action = self.timeline.action_at(frame.pts_s)
            out.append({a: (1.0 if a == action else 0.0) for a in ACTIONS})
        return out


def create(arg: str, rate_hz: float) -> TimelineRecognizer:
    """The registry's factory for ``timeline:FILE[#VIDEO]``."""
    return TimelineRecognizer(load_timeline(arg), rate_hz=rate_hz)
