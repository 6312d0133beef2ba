"""WebRTC ingest: one room's video track from a browser (or any WebRTC peer), received with aiortc.

aiortc decodes in its own thread and queues the decoded frames on the event loop without bound,
so a ``recv-{name}`` task keeps draining that queue: it only stamps each frame and drops it into
a one-slot box (newest wins, a replaced frame counts as dropped). A ``convert-{name}`` thread takes
the newest frame, converts it to RGB at ``output_size`` with one shared ``VideoReformatter`` and
hands it to the ``LatestFrameSlot``: no pixel work runs on the event loop.

Peers come and go: ``attach(track, peer=...)`` (called by the signaling endpoint) consumes a new
track, replacing the previous peer's; ``peer_lost(peer, reason)`` marks the stream failed, unless
that peer was already replaced. ``start()`` waits for no peer; ``next_frame()`` waits for frames.

Times: ``pts_s`` is the frame's RTP time relative to the first frame (continued across a peer
replacement); ``captured_at`` is the wall time the frame came out of aiortc's receiver (after
its jitter buffer and VP8/H.264 decoder), the earliest moment the service sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
from av.video.reformatter import Interpolation, VideoReformatter

from streamer.exceptions import SourceError
from streamer.frames import DEFAULT_OUTPUT_SIZE, Frame
from streamer.sources.base import LatestFrameSlot, SourceStats

if TYPE_CHECKING:
    from av.video.frame import VideoFrame

log = structlog.get_logger(__name__)

_FALLBACK_FRAME_S = 0.04  # stream-time step used when a frame carries no timestamp
_JOIN_TIMEOUT_S = 2.0


class _RawBox:
    """One slot between the recv task (event loop) and the convert thread; newest wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[VideoFrame, float, float] | None = None
        self._replaced = 0
        self._closed = False

    def put(self, item: tuple[VideoFrame, float, float]) -> None:
        with self._cond:
            if self._item is not None:
                self._replaced += 1
            self._item = item
            self._cond.notify()

    def take(self) -> tuple[tuple[VideoFrame, float, float] | None, int]:
        """The newest item and how many were replaced since the last take; (None, n) once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            replaced, self._replaced = self._replaced, 0
            return (None if self._closed else item), replaced

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WebRTCSource:
    """A ``FrameSource`` fed by the video track of the room's current WebRTC peer."""

    def __init__(
        self, room: str, *, output_size: tuple[int, int] | None = DEFAULT_OUTPUT_SIZE, name: str | None = None
    ) -> None:
        if output_size is not None and (len(output_size) != 2 or min(output_size) < 1):
            raise ValueError(f"output_size must be (width, height) with positive sides, got {output_size!r}")
        self.room = room
        self.name = name or f"webrtc-{room}"
        self.output_size = output_size
        self.stats = SourceStats()
        self.received = 0  # frames that came out of aiortc's receiver (decoded ones include the dropped)
        self.peer: str | None = None  # the current peer's id
        self.peers_seen = 0
        self.first_frame_at: float | None = None
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the last frame received
        self._slot = LatestFrameSlot(self.stats, lossless=False)
        self._box = _RawBox()
        self._thread: threading.Thread | None = None
        self._recv_task: asyncio.Task[None] | None = None
        self._next_pts_s = 0.0  # where the next peer's stream time starts
        self._log = log.bind(room=room, source=self.name)

    # ---- FrameSource -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the convert thread; frames flow once a peer attaches (now or later)."""
        if self._thread is not None:
            raise SourceError(f"webrtc source {self.name!r} is already started")
        self._slot.bind(asyncio.get_running_loop())
        self._thread = threading.Thread(target=self._convert_loop, name=f"convert-{self.name}", daemon=True)
        self._thread.start()

    async def next_frame(self) -> Frame | None:
        if self._thread is None and not self._slot.closed:
            raise SourceError(f"webrtc source {self.name!r}: next_frame() before start()")
        return await self._slot.get()

    async def stop(self) -> None:
        """Stop consuming, end the stream and join the convert thread (off the event loop)."""
        await self._cancel_recv()
        self._box.close()
        self._slot.close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, _JOIN_TIMEOUT_S)

    # ---- peers (called on the event loop by the signaling endpoint) ---------------------------
    @property
    def accepting(self) -> bool:
        """False once the stream has ended or failed: a new peer cannot revive it."""
        return not self._slot.closed

    def attach(self, track: Any, *, peer: str) -> None:
        """Consume ``track`` (an aiortc video track) from now on, replacing the current peer's."""
        if not self.accepting:
            raise SourceError(
                f"room {self.room}: the WebRTC stream has ended ({self.stats.failed or 'stopped'})"
            )
        old_task = self._recv_task
        self.peer = peer
        self.peers_seen += 1
        if old_task is not None:  # the signaling endpoint logs the replacement
            old_task.cancel()
        self._recv_task = asyncio.get_running_loop().create_task(
            self._receive(track, peer), name=f"recv-{self.name}"
        )

    def peer_lost(self, peer: str, reason: str) -> bool:
        """The peer's connection failed or closed: mark the stream failed (True) unless that peer
        is no longer the room's current one (False)."""
        if peer != self.peer or not self.accepting:
            return False
        failed = f"peer disconnected ({reason})"
        self._log.warning("webrtc.peer_lost", peer=peer, reason=reason, received=self.received)
        if self._recv_task is not None and self._recv_task is not asyncio.current_task():
            self._recv_task.cancel()
        self._box.close()
        self._slot.close(failed=failed)
        return True

    async def _cancel_recv(self) -> None:
        task, self._recv_task = self._recv_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- recv task (event loop): stamp and hand over, nothing else ---------------------------
    async def _receive(self, track: Any, peer: str) -> None:
        from aiortc.mediastreams import MediaStreamError

        first_time: float | None = None
        base_s = self._next_pts_s
        pts_s = base_s
        try:
            while True:
                frame = await track.recv()
                arrived_at = time.time()
                t = frame.time  # seconds on the sender's RTP clock
                if first_time is None:  # this peer's first frame
                    first_time, pts_s = (t if t is not None else 0.0), base_s
                    self.first_frame_at = self.first_frame_at or arrived_at
                    self._log.info("webrtc.first_frame", peer=peer, width=frame.width, height=frame.height)
                elif t is None:  # no timestamp: step at a nominal rate
                    pts_s += _FALLBACK_FRAME_S
                else:
                    pts_s = base_s + max(t - first_time, 0.0)
                self.received += 1
                self.frame_size = (frame.width, frame.height)
                self._next_pts_s = pts_s + _FALLBACK_FRAME_S
                self._box.put((frame, pts_s, arrived_at))
        except MediaStreamError:
            self.peer_lost(peer, "track ended")

    # ---- convert thread ----------------------------------------------------------------------
    def _convert_loop(self) -> None:
        reformatter = VideoReformatter()
        index = 0
        failed: str | None = None
        try:
            while True:
                item, replaced = self._box.take()
                self.stats.dropped += replaced  # this thread is the only writer besides slot.put
                if item is None:
                    break
                frame, pts_s, arrived_at = item
                width, height = self.output_size or (frame.width, frame.height)
                rgb = reformatter.reformat(
                    frame, width, height, format="rgb24", interpolation=Interpolation.AREA, threads=1
                )
                image = rgb.to_ndarray()
                if not self._slot.put(Frame(index, pts_s, image, time.time(), arrived_at)):
                    break
                index += 1
        except Exception as exc:  # a bug or a frame PyAV cannot convert: end the stream, say why
            failed = f"webrtc source {self.name!r}: converting frame {index} failed: {exc!r}"
            self._log.exception("webrtc.convert_crashed", frames=index)
        finally:
            self._slot.close(failed=failed)
        self._log.info(
            "webrtc.convert_ended", frames=index, received=self.received, dropped=self.stats.dropped
        )


def build(
    spec: str,
    *,
    realtime: bool,
    output_size: tuple[int, int] | None,
    lossless: bool | None,
    name: str | None,
    room: str = "webrtc",
    **kwargs: Any,
) -> WebRTCSource:
    """The registry's builder for ``webrtc``: a live room whose peers attach through the web app
    (``streamer.web``); never lossless."""
    return WebRTCSource(room, output_size=output_size, name=name, **kwargs)
