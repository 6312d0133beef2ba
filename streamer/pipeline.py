"""One stream's pipeline: source → recognizer → segmenter → NHFM memory → planner → sinks.

Stages run as asyncio tasks joined by queues with declared policies:
- frames: the source's one-slot box, newest wins (lossless in replay);
- keyframes: a decoded frame the running clip's ``KeyframeSampler`` wants (no second decode) is
  converted once at the sampler's size, off the loop: at most ``planner.memory.max_keyframes``,
  spread over the clip. Frames no stage uses are never converted to RGB;
- recognizer: at most ``rate_hz`` frames per stream second, in this stream's worker thread;
- clip events: a bounded queue that is never dropped from (the ingest task waits instead);
- captions (IndirNHFM): the process's caption worker, latest request per room wins; a caption
  arrives when it is ready and never delays a plan;
- planning: a latest-wins slot. A plan at clip start, then a re-plan (refresh) whenever what the
  engine reads of the clip changed (new keyframes, a new caption), at most every
  ``planner.refresh_s`` stream seconds; a result whose clip is no longer current is discarded;
- text: the rationale in its own worker thread under the planner's ``text_deadline_s``; a late text, or one
  for a clip that ended or a ranking already replaced, is dropped and counted;
- sinks (MQTT outbox, page, report): never block; the MQTT outbox is bounded on its own.
Every event carries its stream time and the wall-clock stamp of each stage; every recommendation
says what it saw (``basis``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from planner.config import MemoryConfig, PlannerConfig
from planner.engines.base import CAPTION, KEYFRAMES
from planner.memory import NHFMemory
from planner.planner import Planner
from planner.recommendation import Recommendation
from streamer.captions import Caption, CaptionRequest, CaptionWorker
from streamer.events import ClipEnded, ClipStarted
from streamer.keyframes import KeyframeSampler, KeyframeSettings
from streamer.latency import LatencyRecorder
from streamer.mailbox import LatestWinsMailbox
from streamer.messages import Outgoing, outgoing
from streamer.payloads import PayloadFactory, Topics, latencies_ms
from streamer.recognizers.base import Recognizer
from streamer.segmenter import Segmenter, SegmenterSettings
from streamer.sources.base import FrameSource

log = structlog.get_logger(__name__)

CLIP_QUEUE_BOUND = 64  # clip events are rare (one per ~10 s); the bound only guards memory
_DEFAULT_PLANNER = PlannerConfig()


class PayloadSink(Protocol):
    """Where messages go (MQTT outbox, web page, report). ``emit`` must never block."""

    def emit(self, message: Outgoing) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline reads of the configuration; ``from_config`` is the one way to build it
    in the service (defaults: the config's own)."""

    refresh_text: bool = True  # generate the structured response after publishing the ranking
    memory: MemoryConfig = _DEFAULT_PLANNER.memory
    refresh_s: float = _DEFAULT_PLANNER.refresh_s

    @classmethod
    def from_config(cls, planner: PlannerConfig, *, refresh_text: bool = True) -> PipelineSettings:
        return cls(
            refresh_text=refresh_text,
            memory=planner.memory,
            refresh_s=planner.refresh_s,
        )

    @property
    def keyframes(self) -> KeyframeSettings:
        m = self.memory
        return KeyframeSettings(
            max_keyframes=m.max_keyframes,
            size=(m.keyframe_size, m.keyframe_size),
            min_interval_s=m.keyframe_interval_s,
        )


@dataclass
class StreamState:
    """Counters and the state shown on the status topic."""

    stream: str = "starting"  # starting | running | ended | failed
    reason: str | None = None
    frames_processed: int = 0
    frames_skipped: int = 0  # seen but not due for recognition (rate limit)
    recommendations: int = 0  # recommendation messages published (rankings and texts)
    rankings: int = 0  # rankings published: one per clip start, plus the in-clip refreshes
    refreshes: int = 0  # in-clip re-plans published
    texts: int = 0  # rationale texts published
    late_texts: int = 0  # texts past text_deadline_s (dropped)
    dropped_texts: int = 0  # texts for a clip that had ended or a ranking already replaced
    unparsed_texts: int = 0  # texts in time that did not parse as a structured response (not published)
    captions: int = 0  # captions received for the running clip
    stale_plans: int = 0
    last_pts_s: float = 0.0
    clips: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Basis:
    """What one plan saw of the running clip."""

    trigger: str  # "clip_start" | "refresh"
    revision: int  # 0 at clip start, +1 per in-clip re-plan
    keyframes: int
    keyframes_span_s: tuple[float, float] | None  # stream times of the first and last keyframe
    caption: bool
    clip_elapsed_s: float  # stream seconds from the clip's start to the newest frame seen
    seen_until_s: float  # stream time of the newest frame when the plan was made

    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "revision": self.revision,
            "keyframes": self.keyframes,
            "keyframes_span_s": None
            if self.keyframes_span_s is None
            else [round(self.keyframes_span_s[0], 3), round(self.keyframes_span_s[1], 3)],
            "caption": self.caption,
            "clip_elapsed_s": round(max(self.clip_elapsed_s, 0.0), 3),
            "seen_until_s": round(max(self.seen_until_s, 0.0), 3),
        }


@dataclass(frozen=True)
class _PlanRequest:
    memory: NHFMemory
    clip: ClipStarted
    stamps: dict[str, float]
    basis: Basis


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
        captions: CaptionWorker | None = None,
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
        self.captions = captions
        self.state = StreamState()
        self.latency = LatencyRecorder()
        memory = self.settings.memory
        self.memory = NHFMemory(max_distant=memory.max_distant, max_keyframes=memory.max_keyframes)
        self.keyframes = KeyframeSampler(self.settings.keyframes)
        self.keyframes.start_clip(-1, 0.0)  # frames before the first clip is confirmed belong to it
        self._reads = planner.reads_near
        # keyframes are sampled (and converted) only when someone looks at them: a planner that
        # reads them, or the captioner
        self._samples_keyframes = KEYFRAMES in self._reads or captions is not None
        self._clip: ClipStarted | None = None  # the running clip, once its start was consumed
        self._clip_open = False
        self._caption: Caption | None = None  # the running clip's latest caption
        self._revision = 0  # plans requested for the running clip
        self._planned: tuple[int | None, str | None] = (None, None)  # what the last request read
        self._last_plan_pts = float("-inf")
        self._captioned_version = -1  # keyframe version last sent to the captioner
        self._last_caption_pts = float("-inf")
        self._published_revision = -1  # newest ranking revision published for the running clip
        self._published: tuple[_PlanRequest, Recommendation] | None = None  # that ranking
        self._text_pending: tuple[_PlanRequest, Recommendation] | None = None
        self._text_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clip_events: asyncio.Queue[tuple[ClipStarted | ClipEnded, dict[str, float]] | None] = (
            asyncio.Queue(CLIP_QUEUE_BOUND)
        )
        self._plans: LatestWinsMailbox[_PlanRequest] = LatestWinsMailbox()
        # set while no plan is queued or being ranked; a lossless replay waits for it at each new
        # clip, so a clip's plan is never outrun by the next clip (nothing discarded as stale)
        self._plans_idle = asyncio.Event()
        self._plans_idle.set()
        self._waits_for_plans = bool(getattr(source, "lossless", False))
        # one worker thread per stage per stream: a slow stream never holds another's threads
        self._recognize_pool = ThreadPoolExecutor(1, thread_name_prefix=f"recognize-{room}")
        self._text_pool = ThreadPoolExecutor(1, thread_name_prefix=f"text-{room}")

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> StreamState:
        """Run until the source ends (or fails) and everything queued has been published."""
        self._loop = asyncio.get_running_loop()
        self.state.stream = "running"
        self.emit_status()
        stages = [
            asyncio.ensure_future(c) for c in (self._ingest(), self._consume_clip_events(), self._plan_loop())
        ]
        try:
            await asyncio.gather(*stages)
        finally:
            for stage in stages:  # one stage raised (the service reports it): stop the others too
                stage.cancel()
            await asyncio.gather(*stages, return_exceptions=True)
            if self._text_task is not None and not self._text_task.done():
                self._text_task.cancel()  # the stream ended: no text for a clip that ended
                await asyncio.gather(self._text_task, return_exceptions=True)
                self.state.dropped_texts += 1 + (self._text_pending is not None)
            self._recognize_pool.shutdown(wait=False, cancel_futures=True)
            self._text_pool.shutdown(wait=False, cancel_futures=True)
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
            rankings=self.state.rankings,
            refreshes=self.state.refreshes,
            captions=self.state.captions,
            late_texts=self.state.late_texts,
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
                taken = time.time()  # "frame" latency: this stage's own work, not the source's queue
                self.state.last_pts_s = frame.pts_s
                if self._samples_keyframes and self.keyframes.due(frame.pts_s):  # converted off the loop
                    size = self.keyframes.settings.size
                    image = await loop.run_in_executor(self._recognize_pool, frame.image_at, size)
                    self.keyframes.offer(frame.pts_s, image)
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
                self.latency.add("frame", (stamps["segmented"] - taken) * 1000)
                for event in events:
                    if isinstance(event, ClipStarted):  # from now on, frames are the new clip's
                        self.keyframes.start_clip(event.index, event.start_s)
                    await self._clip_events.put((event, dict(stamps)))
                if events and self._waits_for_plans:  # lossless replay: never read past a clip event
                    await self._clip_events.join()  # before its plan was requested (stream time = basis)
                self._follow_clip()
            for event in self.segmenter.finish(self.state.last_pts_s):
                await self._clip_events.put((event, {"segmented": time.time()}))
        finally:
            await self._clip_events.put(None)

    async def _consume_clip_events(self) -> None:
        while (item := await self._clip_events.get()) is not None:
            try:
                await self._on_clip_event(*item)
            finally:
                self._clip_events.task_done()
        self._plans.close()

    async def _on_clip_event(self, event: ClipStarted | ClipEnded, stamps: dict[str, float]) -> None:
        """Publish the clip event; a clip's start updates the memory and asks for its plan."""
        self._emit(self.topics.clip, self.payloads.clip(event, stamps), retain=False)
        ended = isinstance(event, ClipEnded)
        log.info("stream.clip", room=self.room, what="ended" if ended else "started",
                 clip=event.index + 1, action=event.action,
                 at_s=round(event.end_s if ended else event.start_s, 1))  # fmt: skip
        if isinstance(event, ClipStarted):
            if self._waits_for_plans:  # lossless replay: the previous clip's plan goes out first
                await self._plans_idle.wait()
            self.memory = self.memory.start_clip(event.action, event.start_s)
            self._clip, self._clip_open, self._caption = event, True, None
            self._revision, self._published_revision, self._published = 0, -1, None
            self._captioned_version, self._last_caption_pts = -1, float("-inf")
            self._request_plan("clip_start", stamps)
            self._request_caption()
        else:
            if self._clip is not None and event.index == self._clip.index:
                self._clip_open = False
            self.state.clips.append(
                {
                    "index": event.index,
                    "action": event.action,
                    "start_s": event.start_s,
                    "end_s": event.end_s,
                }
            )

    def _current_keyframes(self) -> tuple[Any, ...]:
        """The running clip's keyframes (none while the sampler is already on a newer clip)."""
        if self._clip is None or self.keyframes.clip_index != self._clip.index:
            return ()
        return self.keyframes.keyframes()

    def _basis_key(self) -> tuple[int | None, str | None]:
        """What the engine reads of the running clip now (labels aside): a refresh is due when it changes."""
        version = self.keyframes.version if KEYFRAMES in self._reads and self._current_keyframes() else None
        caption = self._caption.text if CAPTION in self._reads and self._caption is not None else None
        return version, caption

    def _request_plan(self, trigger: str, stamps: dict[str, float]) -> None:
        assert self._clip is not None
        frames = self._current_keyframes()
        memory = self.memory.with_keyframes([k.image for k in frames]) if frames else self.memory
        if self._caption is not None:
            memory = memory.with_caption(self._caption.text)
        seen = self.state.last_pts_s
        basis = Basis(
            trigger=trigger,
            revision=self._revision,
            keyframes=len(memory.near.keyframes) if memory.near else 0,
            keyframes_span_s=(frames[0].pts_s, frames[-1].pts_s) if frames else None,
            caption=self._caption is not None,
            clip_elapsed_s=seen - self._clip.start_s,
            seen_until_s=seen,
        )
        self._planned = self._basis_key()
        self._last_plan_pts = seen
        self._revision += 1
        stamps = {**stamps, "plan_requested": time.time()}
        self._plans_idle.clear()
        self._plans.put(_PlanRequest(memory, self._clip, stamps, basis))

    def _follow_clip(self) -> None:
        """After each recognized frame: ask for a caption, and re-plan when the basis changed."""
        if self._clip is None or not self._clip_open:
            return
        self._request_caption()
        refresh_s = self.settings.refresh_s
        if refresh_s <= 0 or self.state.last_pts_s - self._last_plan_pts + 1e-9 < refresh_s:
            return
        if self.keyframes.clip_index != self._clip.index or self._basis_key() == self._planned:
            return  # nothing the engine reads has changed: the prior-only planner never re-plans
        self._request_plan("refresh", {"refresh_requested": time.time()})

    def _request_caption(self) -> None:
        """The newest keyframes to the caption worker: at clip start, then at most every refresh_s."""
        if self.captions is None or self._clip is None:
            return
        frames = self._current_keyframes()
        if not frames or self.keyframes.version == self._captioned_version:
            return
        if self._captioned_version >= 0 and (
            self.settings.refresh_s <= 0
            or self.state.last_pts_s - self._last_caption_pts + 1e-9 < self.settings.refresh_s
        ):
            return
        self._captioned_version = self.keyframes.version
        self._last_caption_pts = self.state.last_pts_s
        request = CaptionRequest(self.room, self._clip.index, self._clip.start_s, tuple(frames))
        self.captions.submit(request, self._caption_ready_threadsafe)

    def _caption_ready_threadsafe(self, caption: Caption) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._caption_ready, caption)

    def _caption_ready(self, caption: Caption) -> None:
        clip = self._clip
        if clip is None or caption.clip_index != clip.index or caption.clip_start_s != clip.start_s:
            return  # a caption of a clip that has ended
        self._caption = caption
        self.state.captions += 1
        if not caption.cached:
            self.latency.add("caption", caption.latency_ms)
        self._follow_clip()

    async def _plan_loop(self) -> None:
        while (request := await self._plans.get()) is not None:
            # one hop at most: an instant engine ranks inline; a model engine's request goes straight
            # to the engine worker's thread and this loop awaits it under the planner's deadline
            rec = await self.planner.recommend_async(request.memory)
            if not self._plans.pending:
                self._plans_idle.set()
            if request.clip is not self._clip:  # a newer clip started meanwhile: this one is stale
                self.state.stale_plans += 1
                continue
            stamps = {**request.stamps, "planned": time.time()}
            self._publish_recommendation(rec, request, stamps, refresh=False)
            if self.settings.refresh_text:
                if self._text_pending is not None:  # its ranking was replaced before its text began
                    self.state.dropped_texts += 1
                self._text_pending = (request, rec)  # latest wins
                if self._text_task is None or self._text_task.done():
                    self._text_task = asyncio.create_task(self._text_loop(), name=f"text-{self.room}")

    async def _text_loop(self) -> None:
        """Rationale texts in their own thread, under the text deadline; never for a clip that ended."""
        loop = asyncio.get_running_loop()
        deadline = self.planner.settings.text_deadline_s
        while self._text_pending is not None:
            request, rec = self._text_pending
            self._text_pending = None
            if not self._clip_runs(request):
                self.state.dropped_texts += 1
                continue
            started = time.time()
            try:
                explained = await loop.run_in_executor(
                    self._text_pool, self.planner.explain_within, request.memory, rec, deadline
                )
            except Exception as exc:  # text is optional: the ranking is already out
                log.warning("stream.explain_failed", room=self.room, error=type(exc).__name__, exc_info=True)
                continue
            if explained is None:
                self.state.late_texts += 1
                log.info("stream.text_late", room=self.room, clip=request.clip.index, deadline_s=deadline)
                continue
            target = self._text_target(request, explained)
            if target is None:
                self.state.dropped_texts += 1
                continue
            if explained.response is None:
                self.state.unparsed_texts += 1
                log.info("stream.text_unparsed", room=self.room, clip=request.clip.index)
            else:
                self.latency.add("text", (time.time() - started) * 1000)
                shown_request, shown = target
                stamps = {**shown_request.stamps, "planned": time.time()}
                self._publish_recommendation(shown, shown_request, stamps, refresh=True)

    def _clip_runs(self, request: _PlanRequest) -> bool:
        return request.clip is self._clip and self._clip_open

    def _text_target(
        self, request: _PlanRequest, explained: Recommendation
    ) -> tuple[_PlanRequest, Recommendation] | None:
        """Which published ranking a finished text goes with: its own, while it is the newest of
        a running clip; or the newest one when a refresh replaced it with the same order of
        actions (the text explains that order); none when the clip ended or the order changed."""
        if not self._clip_runs(request) or self._published is None:
            return None
        if request.basis.revision == self._published_revision:
            return request, explained
        newest_request, newest = self._published
        if newest.ranked_labels != explained.ranked_labels:
            return None
        return newest_request, replace(newest, response=explained.response)

    # ---- output ------------------------------------------------------------------------------
    def _publish_recommendation(
        self, rec: Recommendation, request: _PlanRequest, stamps: dict[str, float], *, refresh: bool
    ) -> None:
        stamps["published"] = time.time()
        payload = self.payloads.recommendation(
            rec,
            request.clip,
            stream_time_s=self.state.last_pts_s,
            stamps=stamps,
            refresh=refresh,
            basis=request.basis.to_dict(),
        )
        self.state.recommendations += 1
        if refresh:
            self.state.texts += 1
        else:
            self._published_revision = request.basis.revision
            self._published = (request, rec)
            self.state.rankings += 1
            rank_ms = rec.timings_ms.get("rank", 0.0)
            self.latency.add("plan_rank", rank_ms)
            if "plan_requested" in stamps:  # the hop to the engine and back: planned minus the ranking
                queued_ms = (stamps["planned"] - stamps["plan_requested"]) * 1000
                self.latency.add("plan_hop", max(queued_ms - rank_ms, 0.0))
            if request.basis.trigger == "clip_start":
                self.latency.add_all(latencies_ms(stamps))
                hold_s = request.clip.detected_s - request.clip.start_s
                self.latency.add("segmentation_hold", hold_s * 1000)
            else:
                self.state.refreshes += 1
                self.latency.add("refresh", (stamps["published"] - stamps["refresh_requested"]) * 1000)
        message = self._emit(self.topics.recommendation, payload, retain=False)
        self._send(message.copy_to(self.topics.current))  # the retained latest: the same bytes
        latency = payload.get("latency_ms", {}).get("total")
        log.info("stream.recommendation", room=self.room, clip=request.clip.index + 1,
                 current=rec.current_action, top3=[f"{s.action} {s.score:.2f}" for s in rec.ranked[:3]],
                 latency_ms=None if latency is None else round(latency, 1),
                 kind="text" if refresh else request.basis.trigger, engine=rec.engine)  # fmt: skip

    def _emit(self, topic: str, payload: dict[str, Any], *, retain: bool) -> Outgoing:
        message = outgoing(topic, payload, retain=retain)  # encoded once, for every sink
        self._send(message)
        return message

    def _send(self, message: Outgoing) -> None:
        for sink in self.sinks:
            try:
                sink.emit(message)
            except Exception as exc:  # one broken sink (a closed page) must not stop the stream
                log.warning(
                    "stream.sink_failed",
                    room=self.room,
                    sink=type(sink).__name__,
                    error=str(exc),
                    exc_info=True,
                )
