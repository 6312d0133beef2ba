"""Clip events emitted by the segmenter. Times are stream seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipStarted:
    """A new clip began. ``start_s``: its estimated onset; ``detected_s``: when it was confirmed."""

    index: int  # 0-based clip number in the stream
    action: str
    start_s: float
    detected_s: float


@dataclass(frozen=True)
class ClipEnded:
    """A clip ended (a new one started, or the stream ended)."""

    index: int
    action: str
    start_s: float
    end_s: float
    detected_s: float


ClipEvent = ClipStarted | ClipEnded
