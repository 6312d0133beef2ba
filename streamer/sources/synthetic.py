"""A synthetic feed whose pictures follow an action timeline (for the demo and tests).

Each frame is a base colour that identifies the current action (one per action in
``planner.actions.ACTIONS`` order), plus noise and a grey disc that moves with time, so a
frame classifier can learn the action from the picture and nothing else. Frames are made in
a ``decode-{name}`` thread and go through the same ``LatestFrameSlot`` as real video.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import structlog

from planner.actions import ACTIONS, COAGULATION, DISSECTION, TISSUE_RETRACTION, VESSEL_CLIPPING
from streamer.exceptions import SourceError, TimelineError
from streamer.frames import DEFAULT_OUTPUT_SIZE, Frame
from streamer.sources.base import LatestFrameSlot, SourceStats

log = structlog.get_logger(__name__)

#: RGB base colour of each action, far apart so that a mean colour identifies the action.
ACTION_COLOURS: Final[dict[str, tuple[int, int, int]]] = dict(
    zip(
        ACTIONS,
        [(200, 40, 40), (40, 170, 60), (50, 70, 210), (210, 190, 40), (170, 50, 190)],
        strict=True,
    )
)
NOISE_AMPLITUDE: Final = 24
_DISC_GREY: Final = 128
#: Used when no timeline is given: a cholecystectomy-like order, spread evenly over the duration.
DEFAULT_SEQUENCE: Final[tuple[str, ...]] = (
    TISSUE_RETRACTION,
    DISSECTION,
    COAGULATION,
    DISSECTION,
    VESSEL_CLIPPING,
    DISSECTION,
)


def validate_timeline(timeline: Sequence[tuple[float, str]], start_s: float = 0.0) -> list[tuple[float, str]]:
    """(start_s, action) rows, the first at the first frame (``start_s``, 0 s unless the video
    starts later), strictly increasing starts, labels from ACTIONS."""
    rows = [(float(start), action) for start, action in timeline]
    if not rows:
        raise TimelineError("timeline is empty: give at least one (start_s, action) row")
    for i, (start, action) in enumerate(rows):
        if action not in ACTIONS:
            raise TimelineError(f"timeline row {i}: unknown action {action!r} (expected one of {ACTIONS})")
        if i == 0 and start != start_s:
            raise TimelineError(f"timeline row 0 must start at {start_s:g} s, got {start!r}")
        if i and start <= rows[i - 1][0]:
            raise TimelineError(f"timeline row {i}: start {start!r} is not after {rows[i - 1][0]!r}")
    return rows


def default_timeline(duration_s: float) -> list[tuple[float, str]]:
    step = duration_s / len(DEFAULT_SEQUENCE)
    return [(i * step, action) for i, action in enumerate(DEFAULT_SEQUENCE)]


class SyntheticSource:
    """A ``FrameSource`` that draws frames from a timeline; ``pts_s = start_s + index / fps``."""

    def __init__(
        self,
        timeline: Sequence[tuple[float, str]] | None = None,
        *,
        duration_s: float = 60.0,
        fps: float = 25.0,
        size: tuple[int, int] = DEFAULT_OUTPUT_SIZE,
        realtime: bool = False,
        speed: float = 1.0,
        lossless: bool | None = None,
        seed: int = 0,
        name: str = "synthetic",
        start_s: float = 0.0,
    ) -> None:
        """``size`` is (width, height). ``lossless`` defaults to ``not realtime``. ``speed`` > 1
        plays a realtime stream faster than real time (the demo). ``start_s``: the stream time of
        the first frame (a recording that starts into a procedure's timeline); it ends at
        ``duration_s``."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        if duration_s <= 0 or fps <= 0:
            raise ValueError(f"duration_s and fps must be positive, got {duration_s!r} and {fps!r}")
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"size must be (width, height) with sides of at least 8, got {size!r}")
        if not 0 <= start_s < duration_s:
            raise ValueError(f"start_s must be in [0, duration_s), got {start_s!r}")
        self.timeline = (
            validate_timeline(timeline, start_s) if timeline is not None else default_timeline(duration_s)
        )
        self.duration_s = duration_s
        self.start_s = start_s
        self.fps = fps
        self.size = size
        self.realtime = realtime
        self.speed = speed
        self.lossless = (not realtime) if lossless is None else lossless
        self.seed = seed
        self.name = name
        self.stats = SourceStats()
        self._starts = [start for start, _ in self.timeline]
        self._slot = LatestFrameSlot(self.stats, lossless=self.lossless)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def frame_count(self) -> int:
        return round((self.duration_s - self.start_s) * self.fps)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def action_at(self, t_s: float) -> str:
        """The timeline's action at stream time ``t_s``."""
        return self.timeline[max(0, bisect.bisect_right(self._starts, t_s) - 1)][1]

    def render(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """Frame ``index`` as H×W×3 RGB uint8: the action's colour, noise, a moving grey disc."""
        width, height = self.size
        t = self.start_s + index / self.fps
        base = np.array(ACTION_COLOURS[self.action_at(t)], dtype=np.int16)
        noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(height, width, 3), dtype=np.int16)
        image = base + noise
        cx = width / 2 + width / 4 * math.cos(t)
        cy = height / 2 + height / 4 * math.sin(t)
        ys, xs = np.ogrid[:height, :width]
        disc = (xs - cx) ** 2 + (ys - cy) ** 2 <= (min(width, height) / 8) ** 2
        image[disc] = _DISC_GREY
        out: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
        return out

    async def start(self) -> None:
        if self._thread is not None:
            raise SourceError(f"synthetic source {self.name!r} is already started")
        self._slot.bind(asyncio.get_running_loop())
        self._thread = threading.Thread(target=self._produce, name=f"decode-{self.name}", daemon=True)
        self._thread.start()

    async def next_frame(self) -> Frame | None:
        if self._thread is None:
            raise SourceError(f"synthetic source {self.name!r}: next_frame() before start()")
        return await self._slot.get()

    async def stop(self) -> None:
        self._stop.set()
        self._slot.close(discard=True)
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 2.0)

    def _produce(self) -> None:
        rng = np.random.default_rng(self.seed)
        started = (time.monotonic(), time.time())
        failed: str | None = None
        log.info("synthetic_started", source=self.name, frames=self.frame_count, realtime=self.realtime)
        try:
            for index in range(self.frame_count):
                pts_s = self.start_s + index / self.fps
                due_s = (pts_s - self.start_s) / self.speed
                if self.realtime and self._stop.wait(max(0.0, started[0] + due_s - time.monotonic())):
                    break
                image = self.render(index, rng)
                now = time.time()
                captured_at = started[1] + due_s if self.realtime else now
                if not self._slot.put(Frame(index, pts_s, image, now, captured_at)):
                    break
        except Exception as exc:  # a bug: end the stream and say why rather than die silently
            failed = f"synthetic source {self.name!r} failed: {exc!r}"
            log.exception("synthetic_crashed", source=self.name)
        finally:
            self._slot.close(failed=failed)
        log.info("synthetic_ended", source=self.name, decoded=self.stats.decoded, dropped=self.stats.dropped)


def build(
    spec: str, *, output_size: tuple[int, int] | None, name: str | None, **options: Any
) -> SyntheticSource:
    """The registry's builder for ``synthetic`` (``options``: realtime, lossless, timeline, ...)."""
    return SyntheticSource(size=output_size or DEFAULT_OUTPUT_SIZE, name=name or "synthetic", **options)
