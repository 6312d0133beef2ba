"""The source contract, and the one-slot box that hands the newest frame to the consumer.

A source decodes in its own thread (never on the event loop) and puts frames into a
``LatestFrameSlot``. Live, the slot keeps only the newest frame and counts the ones the
consumer never took (``dropped``). In lossless mode (replay as fast as possible) the producer
waits for the consumer instead, so nothing is dropped and throughput is the pipeline's own.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Protocol

from streamer.frames import Frame


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
    """A thread-safe single slot between a producer thread and an asyncio consumer."""

    def __init__(self, stats: SourceStats, *, lossless: bool = False) -> None:
        self._stats = stats
        self._lossless = lossless
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
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
                while self._frame is not None and not self._closed:
                    self._cond.wait(0.1)
            if self._closed:
                return False
            if self._frame is not None:
                self._stats.dropped += 1
            self._frame = frame
            self._stats.decoded += 1
        self._wake()
        return True

    def close(self, failed: str | None = None) -> None:
        """No more frames (end of stream, or a failure with its reason)."""
        with self._cond:
            self._closed = True
            if failed and not self._stats.failed:
                self._stats.failed = failed
            self._stats.ended = True
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
        """The newest frame, waiting for one; None when closed and empty."""
        while True:
            with self._cond:
                frame, self._frame = self._frame, None
                if frame is not None:
                    self._stats.delivered += 1
                    self._cond.notify_all()
                    return frame
                if self._closed:
                    return None
                self._ready.clear()
            await self._ready.wait()
