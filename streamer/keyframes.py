"""Keyframes of the running clip for the live NHFM (DirNHFM's v_t, the captioner's input).

Pure and synchronous: the pipeline offers the frames it already decoded (no second decode);
the sampler keeps at most ``max_keyframes`` of them, spread evenly over the clip so far, each
downscaled once, when it is admitted, to ``size`` (the VL model's input size).

How the set keeps covering a growing clip: admitted frames sit on a grid of ticks
``start + k * stride`` (the first offered frame at or after each tick) plus the newest admitted
frame (the tail). When the grid fills, every other grid frame is dropped and the stride doubles,
so the kept frames always span the clip from its start to now at a roughly even spacing, and
between ``max_keyframes / 2`` and ``max_keyframes`` of them are kept once the clip is long.
Candidates are admitted at most one per ``min_interval_s`` of stream time, so a 25 fps feed
costs one resize per second, not 25.

Memory per room is bounded: at most ``max_keyframes`` images of ``size`` (width × height × 3
bytes each), e.g. 8 × 224 × 224 × 3 = 1.2 MB; nothing else is kept. Pixels never reach logs
(``Keyframe.image`` has no repr).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamer.frames import resize_rgb

#: Default keyframe size: Qwen2-VL's processor turns 224×224 into 64 visual tokens.
DEFAULT_KEYFRAME_SIZE = (224, 224)
DEFAULT_MIN_INTERVAL_S = 1.0
_EPS = 1e-9


@dataclass(frozen=True)
class KeyframeSettings:
    max_keyframes: int = 8
    size: tuple[int, int] | None = DEFAULT_KEYFRAME_SIZE  # (width, height); None keeps the frame's size
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S  # never two keyframes closer than this in stream time

    def __post_init__(self) -> None:
        if self.max_keyframes < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {self.max_keyframes}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise ValueError(f"keyframe size must be (width, height) with sides >= 8, got {self.size!r}")
        if self.min_interval_s <= 0:
            raise ValueError(f"min_interval_s must be > 0, got {self.min_interval_s}")

    @property
    def max_bytes(self) -> int | None:
        """The most pixel memory one room's sampler holds (None when ``size`` is None)."""
        if self.size is None:
            return None
        return self.max_keyframes * self.size[0] * self.size[1] * 3


@dataclass(frozen=True)
class Keyframe:
    """One keyframe: its stream time and its downscaled RGB image (never shown in logs)."""

    pts_s: float
    image: np.ndarray = field(repr=False, compare=False)


class KeyframeSampler:
    """The keyframes of one stream's current clip. Not thread-safe: one owner (the ingest task)."""

    def __init__(self, settings: KeyframeSettings | None = None) -> None:
        self.settings = settings or KeyframeSettings()
        self.clip_index: int | None = None
        self.clip_start_s = 0.0
        self.version = 0  # +1 every time the kept set changes (the pipeline's "basis changed")
        self._stride = self.settings.min_interval_s
        self._grid: list[Keyframe] = []
        self._tail: Keyframe | None = None
        self._next_due = float("-inf")

    # ---- updates -------------------------------------------------------------------------------
    def start_clip(self, index: int, start_s: float) -> None:
        """A new clip: forget the old one's frames, except those at or after ``start_s`` (the
        segmenter confirms a clip after its onset; frames between belong to the new clip)."""
        kept = [k for k in self.keyframes() if k.pts_s + _EPS >= start_s]
        changed = bool(kept) or bool(self._grid) or self._tail is not None
        self.clip_index = index
        self.clip_start_s = start_s
        self._stride = self.settings.min_interval_s
        self._grid, self._tail = [], None
        self._next_due = float("-inf")
        for frame in kept:
            self._admit(frame)
        if changed:
            self.version += 1

    def due(self, pts_s: float) -> bool:
        """Whether a frame at ``pts_s`` would be kept: ask before converting a frame to offer it."""
        return not (
            self.clip_index is None or pts_s + _EPS < self.clip_start_s or pts_s + _EPS < self._next_due
        )

    def offer(self, pts_s: float, image: np.ndarray) -> bool:
        """A decoded frame of the running clip; True when it was kept (the set changed)."""
        if not self.due(pts_s):
            return False
        self._admit(Keyframe(pts_s, self._downscale(image)))
        self.version += 1
        return True

    # ---- reading -------------------------------------------------------------------------------
    def keyframes(self) -> tuple[Keyframe, ...]:
        """The kept frames, oldest first: at most ``max_keyframes``, spanning the clip so far."""
        if self._tail is None or (self._grid and self._grid[-1] is self._tail):
            return tuple(self._grid)
        return (*self._grid, self._tail)

    def images(self) -> tuple[np.ndarray, ...]:
        return tuple(k.image for k in self.keyframes())

    @property
    def nbytes(self) -> int:
        return sum(k.image.nbytes for k in self.keyframes())

    # ---- internals -----------------------------------------------------------------------------
    def _admit(self, frame: Keyframe) -> None:
        self._next_due = frame.pts_s + self.settings.min_interval_s
        self._tail = frame
        limit = self.settings.max_keyframes
        if limit == 1:  # one frame cannot span a clip: keep the newest
            self._grid = []
            return
        tick = self.clip_start_s + len(self._grid) * self._stride
        if frame.pts_s + _EPS >= tick:
            self._grid.append(frame)
        while len(self._grid) > limit - 1:  # the tail needs a slot
            self._grid = self._grid[::2]
            self._stride *= 2

    def _downscale(self, image: np.ndarray) -> np.ndarray:
        size = self.settings.size
        if size is None or (image.shape[1], image.shape[0]) == size:
            # a view would keep a larger decoder buffer alive: own the pixels
            return image if image.flags.owndata else image.copy()
        return resize_rgb(image, size)
