"""Features of the learned sequence planner: pure, from what the live path knows while clip t runs.

A ``Timeline`` is the label history a_1..a_t (a_t = the clip that runs now) with the start second
of each clip when known. ``features`` turns it into a fixed, named vector:

- the current and the two previous labels (one-hot), and the (previous, current) pair (one-hot);
- counts of each action so far (log1p) and the clip index (log1p of t);
- elapsed procedure time at the current clip's start (from the first clip's start);
- durations of finished clips: the previous clip's, and the mean of all finished clips;
- time since the last Vessel Clipping started, and clips since then; whether clipping happened.

Runs of one label (histories from the second annotator's labels can repeat one) count as one clip.

Times are log1p seconds. A time that cannot be known (no start times, no earlier clip) is NaN:
the model standardises NaN to the training mean (0 after scaling), so a history without times
still gets a sensible answer.

The time already spent in the current clip is deliberately NOT a next-action feature: live, the
recommendation is computed when the clip starts (and refreshed as it runs), while offline the
paper's samples are scored just before the switch. A feature that differs between those moments
would make live and offline scores disagree. It drives the time-to-next estimate instead
(``planner.time_to_next``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from planner.actions import ACTIONS, VESSEL_CLIPPING, is_label
from planner.exceptions import UnknownActionError
from planner.memory import NHFMemory

#: Bumped whenever the feature list or a feature's meaning changes (a model file records it).
FEATURE_VERSION = 1


@dataclass(frozen=True)
class Timeline:
    labels: tuple[str, ...]  # a_1..a_t; empty before the first clip
    starts: tuple[float, ...] = ()  # start second of each clip in ``labels``; () when unknown
    now_s: float | None = None  # the stream time of this refresh, when known

    def __post_init__(self) -> None:
        for label in self.labels:
            if not is_label(label):
                raise UnknownActionError(label, "timeline")
        if self.starts and len(self.starts) != len(self.labels):
            raise ValueError(f"starts must match labels ({len(self.labels)}), got {len(self.starts)}")

    @property
    def current(self) -> str | None:
        return self.labels[-1] if self.labels else None

    @property
    def clip_elapsed_s(self) -> float | None:
        """How long the current clip has lasted at ``now_s`` (None when unknown)."""
        if not self.starts or self.now_s is None:
            return None
        return max(0.0, self.now_s - self.starts[-1])

    @classmethod
    def from_memory(cls, memory: NHFMemory, now_s: float | None = None) -> Timeline:
        labels = memory.history
        starts: tuple[float, ...] = ()
        aligned = len(memory.distant_starts) == len(memory.distant)
        if memory.near is not None and aligned and (memory.distant_starts or not memory.distant):
            starts = (*memory.distant_starts, memory.near.start_s)
        if starts and any(b < a for a, b in itertools.pairwise(starts)):
            starts = ()  # not in order: treat as unknown rather than invent negative durations
        return cls(labels=labels, starts=starts, now_s=now_s)


def _names() -> tuple[str, ...]:
    names = [f"cur={a}" for a in ACTIONS]
    names += [f"prev={a}" for a in ACTIONS]
    names += [f"prev2={a}" for a in ACTIONS]
    names += [f"pair={p}>{c}" for p in ACTIONS for c in ACTIONS if p != c]
    names += [f"count={a}" for a in ACTIONS]
    names += [
        "clip_index",
        "has_clipped",
        "clips_since_clipping",
        "elapsed_procedure_s",
        "prev_duration_s",
        "mean_finished_duration_s",
        "since_clipping_s",
    ]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def features(timeline: Timeline) -> list[float]:
    """The feature vector of ``timeline`` in ``FEATURE_NAMES`` order (NaN = unknown time)."""
    x = [0.0] * len(FEATURE_NAMES)
    timeline = collapse_repeats(timeline)
    labels = timeline.labels
    t = len(labels)

    def one_hot(prefix: str, label: str | None) -> None:
        if label is not None:
            x[_INDEX[f"{prefix}={label}"]] = 1.0

    cur = labels[-1] if t >= 1 else None
    prev = labels[-2] if t >= 2 else None
    one_hot("cur", cur)
    one_hot("prev", prev)
    one_hot("prev2", labels[-3] if t >= 3 else None)
    if cur is not None and prev is not None and cur != prev:
        x[_INDEX[f"pair={prev}>{cur}"]] = 1.0
    for a in ACTIONS:
        x[_INDEX[f"count={a}"]] = math.log1p(labels.count(a))
    x[_INDEX["clip_index"]] = math.log1p(t)
    clip_positions = [i for i, a in enumerate(labels) if a == VESSEL_CLIPPING]
    x[_INDEX["has_clipped"]] = 1.0 if clip_positions else 0.0
    x[_INDEX["clips_since_clipping"]] = math.log1p(t - 1 - clip_positions[-1]) if clip_positions else 0.0

    nan = math.nan
    starts = timeline.starts
    known = bool(starts) and t >= 1
    durations = _finished_durations(starts) if known else []
    x[_INDEX["elapsed_procedure_s"]] = _log(starts[-1] - starts[0]) if known else nan
    x[_INDEX["prev_duration_s"]] = _log(durations[-1]) if durations else nan
    x[_INDEX["mean_finished_duration_s"]] = _log(sum(durations) / len(durations)) if durations else nan
    x[_INDEX["since_clipping_s"]] = (
        _log(starts[-1] - starts[clip_positions[-1]]) if known and clip_positions else nan
    )
    return x


def collapse_repeats(timeline: Timeline) -> Timeline:
    """Merge runs of one label into one clip (its first start). Live and training sequences never
    repeat a label; histories built from the second annotator's labels sometimes do."""
    if all(a != b for a, b in zip(timeline.labels, timeline.labels[1:], strict=False)):
        return timeline
    labels: list[str] = []
    starts: list[float] = []
    for i, label in enumerate(timeline.labels):
        if labels and labels[-1] == label:
            continue
        labels.append(label)
        if timeline.starts:
            starts.append(timeline.starts[i])
    return Timeline(tuple(labels), tuple(starts), timeline.now_s)


def _finished_durations(starts: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


def _log(seconds: float) -> float:
    return math.log1p(max(0.0, seconds))
