"""The live captioner (IndirNHFM's C_t): one worker thread per process, off the ranking path.

Every room hands it the newest keyframes of its current clip; per room only the latest request
waits (an older one is replaced, counted). The worker writes the caption and calls the room
back (from the worker thread: the pipeline hops to its event loop). A recommendation never waits
for a caption: a plan uses the latest caption that is ready, and the prompt says "no description
available" until one is. Captions are cached per clip and per newest keyframe, so asking twice for
the same frames costs nothing. Caption latency (request to result, and the model's own time) is
measured, logged per caption and kept for the report.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from streamer.keyframes import Keyframe
from streamer.latency import LatencyRecorder

log = structlog.get_logger(__name__)

Describe = Callable[[Sequence[np.ndarray]], str]
_JOIN_S = 10.0


@dataclass(frozen=True)
class CaptionRequest:
    room: str
    clip_index: int
    clip_start_s: float
    keyframes: tuple[Keyframe, ...] = field(repr=False)  # oldest first; the worker reads the newest
    requested_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int, float]:
        return (self.room, self.clip_index, self.clip_start_s)

    @property
    def newest_pts_s(self) -> float | None:
        return self.keyframes[-1].pts_s if self.keyframes else None


@dataclass(frozen=True)
class Caption:
    room: str
    clip_index: int
    clip_start_s: float
    text: str
    frames_pts_s: tuple[float, ...]  # stream times of the keyframes it describes
    latency_ms: float  # request → caption ready (waiting included)
    generate_ms: float  # the model's own time
    cached: bool = False


OnCaption = Callable[[Caption], None]


class CaptionWorker:
    """Captions rooms' clips in one named thread. ``describe(images)`` is the model call."""

    def __init__(
        self, describe: Describe, *, frames: int = 1, model: str = "", cache_size: int = 256
    ) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.describe = describe
        self.frames = frames
        self.model = model
        self.cache_size = cache_size
        self.latency = LatencyRecorder()
        self.stats = {"requested": 0, "replaced": 0, "captioned": 0, "cache_hits": 0, "failed": 0, "empty": 0}
        self._pending: OrderedDict[str, tuple[CaptionRequest, OnCaption]] = OrderedDict()
        self._cache: OrderedDict[tuple[str, int, float], tuple[float | None, Caption]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="captioner", daemon=True)
        self._thread.start()

    def submit(self, request: CaptionRequest, on_done: OnCaption) -> None:
        """Caption ``request`` (latest per room wins); ``on_done`` runs in the worker thread."""
        if not request.keyframes:
            return
        with self._cond:
            if self._closed:
                return
            self.stats["requested"] += 1
            hit = self._cache.get(request.key)
            if hit is not None and hit[0] == request.newest_pts_s:
                self.stats["cache_hits"] += 1
                cached = hit[1]
            else:
                cached = None
                if request.room in self._pending:
                    self.stats["replaced"] += 1
                    del self._pending[request.room]
                self._pending[request.room] = (request, on_done)  # to the back: rooms take turns
                self._cond.notify()
        if cached is not None:
            on_done(Caption(**{**vars(cached), "cached": True, "latency_ms": 0.0}))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(_JOIN_S)

    def summary(self) -> dict[str, object]:
        return {**self.stats, "model": self.model, "latency_ms": self.latency.summary()}

    # ---- worker thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _room, (request, on_done) = self._pending.popitem(last=False)
            caption = self._caption(request)
            if caption is None:
                continue
            with self._cond:
                self._cache[request.key] = (request.newest_pts_s, caption)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            try:
                on_done(caption)
            except Exception:  # a room's callback must not kill the worker of every room
                log.exception("captions.callback_failed", room=request.room)

    def _caption(self, request: CaptionRequest) -> Caption | None:
        frames = request.keyframes[-self.frames :]
        t0 = time.monotonic()
        try:
            text = " ".join(self.describe([k.image for k in frames]).split())
        except Exception as exc:  # the plan goes on without C_t
            self.stats["failed"] += 1
            log.warning("captions.failed", room=request.room, clip=request.clip_index, error=repr(exc))
            return None
        done = time.monotonic()
        if not text:  # nothing usable: the prompt keeps saying "no description available"
            self.stats["empty"] += 1
            return None
        generate_ms = (done - t0) * 1000
        latency_ms = (done - request.requested_at) * 1000
        self.stats["captioned"] += 1
        self.latency.add("caption", latency_ms)
        self.latency.add("caption_generate", generate_ms)
        log.info(
            "captions.captioned",
            room=request.room,
            clip=request.clip_index,
            frames=len(frames),
            newest_pts_s=round(frames[-1].pts_s, 3),
            latency_ms=round(latency_ms, 1),
            generate_ms=round(generate_ms, 1),
            chars=len(text),
        )
        return Caption(
            room=request.room,
            clip_index=request.clip_index,
            clip_start_s=request.clip_start_s,
            text=text,
            frames_pts_s=tuple(k.pts_s for k in frames),
            latency_ms=latency_ms,
            generate_ms=generate_ms,
        )
