"""The source contract, and the one-slot box that hands the newest frame to the consumer.

A source decodes in its own thread (never on the event loop) and puts frames into a
``LatestFrameSlot``. Live, the slot keeps only the newest frame and counts the ones the
consumer never took (``dropped``). In lossless mode (replay as fast as possible) it holds up to
``LOSSLESS_DEPTH`` frames in order and the producer waits only when they are all untaken, so
nothing is dropped and decoding runs ahead while the consumer works (in parallel, on another
core). The consumer's loop is woken only when it waits for a frame (lossless: once
``LOSSLESS_WAKE_AT`` frames are in, or at the end), not once per frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from streamer.frames import Frame

#: frames a lossless slot holds before its producer waits (decoded, not yet converted: ~0.6 MB
#: each at 854×480)
LOSSLESS_DEPTH = 16
#: a waiting consumer of a lossless slot is woken once this many frames are in (or at the end)
LOSSLESS_WAKE_AT = 4


@dataclass
class SourceStats:
    decoded: int = 0  # frames the source produced
    delivered: int = 0  # frames the consumer took
    dropped: int = 0  # frames replaced before the consumer took them
    failed: str | None = None  # why the stream failed, if it did
    ended: bool = False


class FrameSource(Protocol):
    """A stream of frames. ``start`` begins decoding; ``next_frame`` waits for the newest frame
    (``None`` once the stream has ended or failed: see ``stats.failed``); ``stop`` ends decoding
    and joins the thread."""

    name: str
    stats: SourceStats

    async def start(self) -> None: ...

    async def next_frame(self) -> Frame | None: ...

    async def stop(self) -> None: ...


class LatestFrameSlot:
    """A thread-safe slot between a producer thread and an asyncio consumer: the newest frame
    (live), or up to ``LOSSLESS_DEPTH`` frames in order (lossless)."""

    def __init__(self, stats: SourceStats, *, lossless: bool = False) -> None:
        self._stats = stats
        self._lossless = lossless
        self._depth = LOSSLESS_DEPTH if lossless else 1
        # lossless: wake a waiting consumer once a few frames are in (fewer loop wake-ups per frame)
        self._wake_at = LOSSLESS_WAKE_AT if lossless else 1
        self._cond = threading.Condition()
        self._frames: deque[Frame] = deque()
        self._closed = False
        self._waiting = False  # the consumer waits for a frame: the producer must wake its loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call from the event loop before the producer starts."""
        self._loop = loop

    # ---- producer side (decode thread) -----------------------------------------------------
    def put(self, frame: Frame) -> bool:
        """Offer a frame; returns False once the slot is closed (the producer should stop)."""
        with self._cond:
            if self._lossless:
                while len(self._frames) >= self._depth and not self._closed:
                    self._cond.wait(0.1)
            if self._closed:
                return False
            if len(self._frames) >= self._depth:  # live: the untaken frame is replaced
                self._frames.popleft()
                self._stats.dropped += 1
            self._frames.append(frame)
            self._stats.decoded += 1
            wake = self._waiting and len(self._frames) >= self._wake_at
            if wake:
                self._waiting = False
        if wake:
            self._wake()
        return True

    def close(self, failed: str | None = None, *, discard: bool = False) -> None:
        """No more frames (end of stream, or a failure with its reason). ``discard``: the consumer
        stopped, frames it has not taken are dropped (uncounted: nobody wants them)."""
        with self._cond:
            self._closed = True
            if discard:
                self._frames.clear()
            if failed and not self._stats.failed:
                self._stats.failed = failed
            self._stats.ended = True
            self._waiting = False
            self._cond.notify_all()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ready.set)

    # ---- consumer side (event loop) --------------------------------------------------------
    async def get(self) -> Frame | None:
        """The next frame (live: the newest), waiting for one; None when closed and empty."""
        while True:
            with self._cond:
                if self._frames:
                    frame = self._frames.popleft()
                    self._stats.delivered += 1
                    if self._lossless:
                        self._cond.notify_all()
                    return frame
                if self._closed:
                    return None
                self._ready.clear()
                self._waiting = True
            await self._ready.wait()
