"""WebRTC ingest: one room's video track from a browser (or any WebRTC peer), received with aiortc.

aiortc decodes in its own thread and queues the decoded frames on the event loop without bound,
so a ``recv-{name}`` task keeps draining that queue: it only stamps each frame and puts it,
unconverted, into the ``LatestFrameSlot`` (newest wins, a replaced frame counts as dropped). The
RGB conversion (at ``output_size`` or the size a consumer asks) happens in the consumer's thread
when a frame is used (``Frame.image_at``), so no pixel work runs on the event loop and unused
frames cost none.

Peers come and go, and the room recovers: ``attach(track, peer=...)`` (called by the signaling
endpoint) makes the new peer a *candidate*; it replaces the current peer only once it delivers its
first frame (an offer that never completes ICE leaves the live camera alone), and a candidate
silent for ``connect_timeout_s`` is dropped (``on_dropped``). ``peer_lost(peer, reason)`` (its
connection failed or closed) leaves the room waiting for a new offer. The room's health, told to
``on_health(state, reason)``: ``live`` while frames arrive; ``stalled`` when the current peer is
lost, when no frame came for ``frame_timeout_s`` (the watchdog), or when a candidate for a room
without a live peer sent nothing in time; ``live`` again with the next frame. ``start()`` waits
for no peer; ``next_frame()`` waits for frames; only ``stop()`` ends the stream.

Times: ``pts_s`` is the frame's RTP time relative to the first frame (continued across a peer
replacement); ``captured_at`` is the wall time the frame came out of aiortc's receiver (after
its jitter buffer and VP8/H.264 decoder), the earliest moment the service sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from streamer.exceptions import SourceError
from streamer.frames import DEFAULT_OUTPUT_SIZE, Frame
from streamer.sources.base import LatestFrameSlot, SourceStats

log = structlog.get_logger(__name__)

_FALLBACK_FRAME_S = 0.04  # stream-time step used when a frame carries no timestamp
CONNECT_TIMEOUT_S = 10.0  # an answered offer must deliver its first frame within this
FRAME_TIMEOUT_S = 3.0  # no frame from the live peer for this long: the room is stalled
HealthListener = Callable[[str, "str | None"], None]


@dataclass
class _Peer:
    peer: str
    task: asyncio.Task[None]
    on_live: Callable[[], None] | None = None  # the signaling endpoint promotes its connection
    on_dropped: Callable[[], None] | None = None  # ... or closes it
    timer: asyncio.TimerHandle | None = None


class WebRTCSource:
    """A ``FrameSource`` fed by the video track of the room's current WebRTC peer."""

    def __init__(
        self,
        room: str,
        *,
        output_size: tuple[int, int] | None = DEFAULT_OUTPUT_SIZE,
        name: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        frame_timeout_s: float = FRAME_TIMEOUT_S,
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
        self._index = 0  # frames handed to the slot
        self._next_pts_s = 0.0  # where the next peer's stream time starts
        self._log = log.bind(room=room, source=self.name)
        self.connect_timeout_s = connect_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.health = "waiting"  # waiting (no peer yet) | live | stalled
        self.health_reason: str | None = None
        self.on_health: HealthListener | None = None
        self.recoveries = 0  # stalled → live
        self._current: _Peer | None = None
        self._candidate: _Peer | None = None
        self._last_frame_at: float | None = None  # monotonic
        self._watchdog: asyncio.Task[None] | None = None

    # ---- FrameSource -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start watching; frames flow once a peer attaches (now or later)."""
        if self._watchdog is not None:
            raise SourceError(f"webrtc source {self.name!r} is already started")
        self._slot.bind(asyncio.get_running_loop())
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name=f"watch-{self.name}")

    async def next_frame(self) -> Frame | None:
        if self._watchdog is None and not self._slot.closed:
            raise SourceError(f"webrtc source {self.name!r}: next_frame() before start()")
        return await self._slot.get()

    async def stop(self) -> None:
        """Stop consuming and end the stream."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self._cancel_recv()
        self._slot.close()
        self._log.info("webrtc.ended", frames=self._index, received=self.received, dropped=self.stats.dropped)

    # ---- peers (called on the event loop by the signaling endpoint) ---------------------------
    @property
    def accepting(self) -> bool:
        """False once the stream has ended or failed: a new peer cannot revive it."""
        return not self._slot.closed

    def attach(
        self,
        track: Any,
        *,
        peer: str,
        on_live: Callable[[], None] | None = None,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        """Consume ``track`` (an aiortc video track) as a candidate: it becomes the room's peer
        with its first frame (``on_live``), or is dropped after ``connect_timeout_s`` or when a
        newer candidate comes (``on_dropped``)."""
        if not self.accepting:
            raise SourceError(
                f"room {self.room}: the WebRTC stream has ended ({self.stats.failed or 'stopped'})"
            )
        loop = asyncio.get_running_loop()
        if self._candidate is not None:
            self._drop_candidate("a newer offer came")
        task = loop.create_task(self._receive(track, peer), name=f"recv-{self.name}-{peer}")
        candidate = _Peer(peer, task, on_live, on_dropped)
        candidate.timer = loop.call_later(self.connect_timeout_s, self._candidate_timed_out, peer)
        self._candidate = candidate

    def peer_lost(self, peer: str, reason: str) -> bool:
        """The peer's connection failed or closed. The room's live peer: the room is stalled until a
        new peer delivers frames (True). A candidate: dropped. Another: nothing (False)."""
        if self._candidate is not None and self._candidate.peer == peer:
            self._drop_candidate(f"connection {reason}", notify=False)
            return False
        current = self._current
        if current is None or current.peer != peer or not self.accepting:
            return False
        self._log.warning("webrtc.peer_lost", peer=peer, reason=reason, received=self.received)
        if current.task is not asyncio.current_task():
            current.task.cancel()
        self._current, self.peer = None, None
        self._set_health("stalled", f"peer disconnected ({reason}): waiting for a new offer")
        return True

    def _drop_candidate(self, why: str, *, notify: bool = True) -> None:
        candidate, self._candidate = self._candidate, None
        if candidate is None:
            return
        self._log.warning("webrtc.candidate_dropped", peer=candidate.peer, reason=why)
        if candidate.timer is not None:
            candidate.timer.cancel()
        if candidate.task is not asyncio.current_task():
            candidate.task.cancel()
        if notify and candidate.on_dropped is not None:
            candidate.on_dropped()

    def _candidate_timed_out(self, peer: str) -> None:
        if self._candidate is None or self._candidate.peer != peer:
            return
        why = f"peer {peer} sent no video within {self.connect_timeout_s:g} s"
        self._drop_candidate(why)
        if self._current is None:  # nobody else is sending: the room has no video
            self._set_health("stalled", why)

    def _promote(self, peer: str) -> bool:
        """``peer``'s first frame: it replaces the live peer (False if it is no longer a candidate)."""
        candidate = self._candidate
        if candidate is None or candidate.peer != peer:
            return False
        self._candidate = None
        if candidate.timer is not None:
            candidate.timer.cancel()
        old, self._current = self._current, candidate
        self.peer = peer
        self.peers_seen += 1
        if old is not None:
            old.task.cancel()
            self._log.info("webrtc.peer_replaced", old_peer=old.peer, peer=peer)
        if candidate.on_live is not None:
            candidate.on_live()
        return True

    def _set_health(self, state: str, reason: str | None) -> None:
        if state == self.health and reason == self.health_reason:
            return
        if state == "live" and self.health == "stalled":
            self.recoveries += 1
            self._log.info("webrtc.recovered", peer=self.peer)
        elif state == "stalled":
            self._log.warning("webrtc.stalled", reason=reason)
        self.health, self.health_reason = state, reason
        if self.on_health is not None:
            try:
                self.on_health(state, reason)
            except Exception:  # a listener's bug must not stop the video
                self._log.exception("webrtc.health_listener_failed")

    async def _watch(self) -> None:
        """The frame watchdog: a live room without a frame for ``frame_timeout_s`` is stalled."""
        while True:
            await asyncio.sleep(min(0.5, self.frame_timeout_s / 4))
            last = self._last_frame_at
            if self.health == "live" and last is not None:
                silent_s = time.monotonic() - last
                if silent_s > self.frame_timeout_s:
                    self._set_health("stalled", f"no video for {silent_s:.0f} s")

    async def _cancel_recv(self) -> None:
        tasks = [p.task for p in (self._current, self._candidate) if p is not None]
        if self._candidate is not None and self._candidate.timer is not None:
            self._candidate.timer.cancel()
        self._current = self._candidate = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- recv task (event loop): stamp and hand over, nothing else (no pixel work) ------------
    async def _receive(self, track: Any, peer: str) -> None:
        from aiortc.mediastreams import MediaStreamError

        first_time: float | None = None
        base_s = pts_s = 0.0
        try:
            while True:
                frame = await track.recv()
                arrived_at = time.time()
                t = frame.time  # seconds on the sender's RTP clock
                if first_time is None:  # this peer's first frame: now it is the room's peer
                    if not self._promote(peer):
                        return
                    base_s = self._next_pts_s  # stream time goes on from the previous peer's
                    first_time, pts_s = (t if t is not None else 0.0), base_s
                    self.first_frame_at = self.first_frame_at or arrived_at
                    self._log.info("webrtc.first_frame", peer=peer, width=frame.width, height=frame.height)
                elif self._current is None or self._current.peer != peer:
                    return  # replaced meanwhile
                elif t is None:  # no timestamp: step at a nominal rate
                    pts_s += _FALLBACK_FRAME_S
                else:
                    pts_s = base_s + max(t - first_time, 0.0)
                self.received += 1
                self._last_frame_at = time.monotonic()
                if self.health != "live":
                    self._set_health("live", None)
                self.frame_size = (frame.width, frame.height)
                self._next_pts_s = pts_s + _FALLBACK_FRAME_S
                handed = Frame(self._index, pts_s, None, time.time(), arrived_at,
                               video_frame=frame, output_size=self.output_size)  # fmt: skip
                if not self._slot.put(handed):  # live: never waits; False once the stream ended
                    return
                self._index += 1
        except MediaStreamError:
            self.peer_lost(peer, "track ended")


def build(
    spec: str, *, realtime: bool, lossless: bool | None, room: str = "webrtc", **options: Any
) -> WebRTCSource:
    """The registry's builder for ``webrtc``: a live room whose peers attach through the web app
    (``streamer.web``); always realtime, never lossless."""
    return WebRTCSource(room, **options)
