"""One stream's pipeline: source → recognizer → segmenter → NHFM memory → planner → sinks.

Stages run as asyncio tasks joined by queues with declared policies:
- frames: the source's one-slot box, newest wins (lossless in replay);
- recognizer: at most ``rate_hz`` frames per stream second, in this stream's worker thread;
- clip events: a bounded queue that is never dropped from (the ingest task waits instead);
- planning: a latest-wins slot; a result whose clip is no longer current is discarded;
- sinks (MQTT outbox, page, report): never block; the MQTT outbox is bounded on its own.
Every event carries its stream time and the wall-clock stamp of each stage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from planner.memory import DEFAULT_MAX_DISTANT, DEFAULT_MAX_KEYFRAMES, NHFMemory
from planner.planner import Planner
from planner.recommendation import Recommendation
from streamer.events import ClipEnded, ClipStarted
from streamer.latency import LatencyRecorder
from streamer.mailbox import LatestWinsMailbox
from streamer.payloads import PayloadFactory, Topics, latencies_ms
from streamer.recognizers.base import Recognizer
from streamer.segmenter import Segmenter, SegmenterSettings
from streamer.sources.base import FrameSource

log = structlog.get_logger(__name__)

CLIP_QUEUE_BOUND = 64  # clip events are rare (one per ~10 s); the bound only guards memory


class PayloadSink(Protocol):
    """Where payloads go (MQTT outbox, web page, report). ``emit`` must never block."""

    def emit(
        self, topic: str, payload: dict[str, Any], *, retain: bool, expires_at: float | None
    ) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    refresh_text: bool = True  # generate the structured response after publishing the ranking
    memory_max_distant: int = DEFAULT_MAX_DISTANT
    memory_max_keyframes: int = DEFAULT_MAX_KEYFRAMES


@dataclass
class StreamState:
    """Counters and the state shown on the status topic."""

    stream: str = "starting"  # starting | running | ended | failed
    reason: str | None = None
    frames_processed: int = 0
    frames_skipped: int = 0  # seen but not due for recognition (rate limit)
    clip_events: int = 0
    recommendations: int = 0
    stale_plans: int = 0
    last_pts_s: float = 0.0
    clips: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _PlanRequest:
    memory: NHFMemory
    clip: ClipStarted
    stamps: dict[str, float]


class StreamPipeline:
    def __init__(
        self,
        *,
        room: str,
        source: FrameSource,
        recognizer: Recognizer,
        planner: Planner,
        sinks: Sequence[PayloadSink],
        payloads: PayloadFactory,
        segmenter: SegmenterSettings | None = None,
        settings: PipelineSettings | None = None,
    ) -> None:
        self.room = room
        self.topics = Topics(room)
        self.source = source
        self.recognizer = recognizer
        self.planner = planner
        self.sinks = list(sinks)
        self.payloads = payloads
        self.segmenter = Segmenter(segmenter)
        self.settings = settings or PipelineSettings()
        self.state = StreamState()
        self.latency = LatencyRecorder()
        self.memory = NHFMemory(
            max_distant=self.settings.memory_max_distant, max_keyframes=self.settings.memory_max_keyframes
        )
        self._clip_events: asyncio.Queue[tuple[ClipStarted | ClipEnded, dict[str, float]] | None] = (
            asyncio.Queue(CLIP_QUEUE_BOUND)
        )
        self._plans: LatestWinsMailbox[_PlanRequest] = LatestWinsMailbox()
        # one worker thread per stage per stream: a slow stream never holds another's threads
        self._recognize_pool = ThreadPoolExecutor(1, thread_name_prefix=f"recognize-{room}")
        self._plan_pool = ThreadPoolExecutor(1, thread_name_prefix=f"plan-{room}")

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> StreamState:
        """Run until the source ends (or fails) and everything queued has been published."""
        self.state.stream = "running"
        self.emit_status()
        try:
            await asyncio.gather(self._ingest(), self._consume_clip_events(), self._plan_loop())
        finally:
            self._recognize_pool.shutdown(wait=False, cancel_futures=True)
            self._plan_pool.shutdown(wait=False, cancel_futures=True)
        failed = self.source.stats.failed
        self.state.stream = "failed" if failed else "ended"
        self.state.reason = failed
        self.emit_status()
        log.info(
            "stream.done",
            room=self.room,
            stream=self.state.stream,
            decoded=self.source.stats.decoded,
            processed=self.state.frames_processed,
            dropped=self.source.stats.dropped,
            recommendations=self.state.recommendations,
        )
        return self.state

    def status_payload(self, state: str = "online") -> dict[str, Any]:
        return self.payloads.status(
            state,
            self.state.stream,
            self.state.reason,
            engine=self.planner.engine.name,
            model=self.planner.engine.model,
        )

    def emit_status(self) -> None:
        payload = self.status_payload()
        self._emit(self.topics.status, payload, retain=True)

    # ---- stages ------------------------------------------------------------------------------
    async def _ingest(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.recognizer.rate_hz
        next_due = float("-inf")
        try:
            while (frame := await self.source.next_frame()) is not None:
                self.state.last_pts_s = frame.pts_s
                if frame.pts_s + 1e-9 < next_due:
                    self.state.frames_skipped += 1
                    continue
                # a fixed grid of recognition times; after a gap, restart the grid at this frame
                next_due = next_due + period if frame.pts_s < next_due + period else frame.pts_s + period
                stamps = {"decoded": frame.decoded_at}
                if frame.captured_at is not None:
                    stamps["captured"] = frame.captured_at
                if self.recognizer.needs_pixels:
                    probs = (
                        await loop.run_in_executor(self._recognize_pool, self.recognizer.predict, [frame])
                    )[0]
                else:
                    probs = self.recognizer.predict([frame])[0]
                stamps["recognized"] = time.time()
                self.state.frames_processed += 1
                events = self.segmenter.update(frame.pts_s, probs)
                stamps["segmented"] = time.time()
                self.latency.add("frame", (stamps["segmented"] - frame.decoded_at) * 1000)
                for event in events:
                    await self._clip_events.put((event, dict(stamps)))
            for event in self.segmenter.finish(self.state.last_pts_s):
                await self._clip_events.put((event, {"segmented": time.time()}))
        finally:
            await self._clip_events.put(None)

    async def _consume_clip_events(self) -> None:
        while (item := await self._clip_events.get()) is not None:
            event, stamps = item
            self.state.clip_events += 1
            self._emit(self.topics.clip, self.payloads.clip(event, stamps), retain=False)
            if isinstance(event, ClipStarted):
                self.memory = self.memory.start_clip(event.action, event.start_s)
                self._plans.put(_PlanRequest(self.memory, event, stamps))
            else:
                self.state.clips.append(
                    {
                        "index": event.index,
                        "action": event.action,
                        "start_s": event.start_s,
                        "end_s": event.end_s,
                    }
                )
        self._plans.close()

    async def _plan_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (request := await self._plans.get()) is not None:
            if self.planner.instant:
                rec = self.planner.recommend(request.memory)
            else:
                rec = await loop.run_in_executor(self._plan_pool, self.planner.recommend, request.memory)
            if self._plans.pending:  # a newer clip started meanwhile: this one is stale
                self.state.stale_plans += 1
                continue
            stamps = {**request.stamps, "planned": time.time()}
            self._publish_recommendation(rec, request, stamps, refresh=False)
            if not self.settings.refresh_text:
                continue
            try:
                rec = await loop.run_in_executor(self._plan_pool, self.planner.explain, request.memory, rec)
            except Exception as exc:  # text is optional: the ranking is already out
                log.warning("stream.explain_failed", room=self.room, error=type(exc).__name__)
                continue
            if not self._plans.pending and rec.response is not None:
                self._publish_recommendation(rec, request, {**stamps, "planned": time.time()}, refresh=True)

    # ---- output ------------------------------------------------------------------------------
    def _publish_recommendation(
        self, rec: Recommendation, request: _PlanRequest, stamps: dict[str, float], *, refresh: bool
    ) -> None:
        stamps["published"] = time.time()
        payload = self.payloads.recommendation(
            rec, request.clip, stream_time_s=self.state.last_pts_s, stamps=stamps, refresh=refresh
        )
        if not refresh:
            self.latency.add_all(latencies_ms(stamps))
            hold_s = request.clip.detected_s - request.clip.start_s
            self.latency.add("segmentation_hold", hold_s * 1000)
            self.latency.add("plan_rank", rec.timings_ms.get("rank", 0.0))
        self.state.recommendations += 1
        self._emit(self.topics.recommendation, payload, retain=False)
        self._emit(self.topics.current, payload, retain=True)

    def _emit(self, topic: str, payload: dict[str, Any], *, retain: bool) -> None:
        expires_at = _epoch(payload["valid_until"])
        for sink in self.sinks:
            try:
                sink.emit(topic, payload, retain=retain, expires_at=expires_at)
            except Exception as exc:  # one broken sink (a closed page) must not stop the stream
                log.warning("stream.sink_failed", room=self.room, sink=type(sink).__name__, error=str(exc))


def _epoch(iso_time: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()
