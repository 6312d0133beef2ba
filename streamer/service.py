"""The service: several streams in one process, one room each, each with its own MQTT link.

Each stream has its own pipeline, worker threads and MQTT publisher (so each room has its own
Last Will on its own status topic), so one slow or failed stream never delays another. With no
broker configured, an embedded amqtt broker on 127.0.0.1 is started first. With a webrtc stream
(or ``web.enabled``), the web app (the OR page, WebRTC ingest) starts before the streams and
every room's payloads also go to its pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from planner.config import PlannerConfig
from planner.planner import Planner
from streamer.captions import CaptionWorker
from streamer.config import ServiceConfig, StreamConfig
from streamer.exceptions import StreamerError
from streamer.messages import Outgoing, outgoing
from streamer.mqtt.outbox import OutMessage
from streamer.mqtt.publisher import MqttPublisher
from streamer.mqtt.url import BrokerSettings, parse_broker_url, watch_commands
from streamer.payloads import PayloadFactory, Topics
from streamer.pipeline import PayloadSink, PipelineSettings, StreamPipeline, StreamState
from streamer.recognizers import create_recognizer
from streamer.recognizers.base import Recognizer
from streamer.sources import open_source
from streamer.sources.base import FrameSource

if TYPE_CHECKING:
    from streamer.web.server import WebServer

log = structlog.get_logger(__name__)

SourceFactory = Callable[[StreamConfig, ServiceConfig], FrameSource]


@runtime_checkable
class WebRTCSourceLike(Protocol):
    """A live source that reports its health (``streamer.sources.webrtc.WebRTCSource``)."""

    on_health: Callable[[str, str | None], None] | None


SinkFactory = Callable[[str], Sequence[PayloadSink]]


def mqtt_message(message: Outgoing) -> OutMessage:
    """An outgoing message as MQTT: its bytes, QoS 1, its expiry; kind and seq for the publisher.
    (A status never expires from the outbox: it is the truth subscribers keep.)"""
    return OutMessage(
        message.topic,
        message.body,
        qos=1,
        retain=message.retain,
        expires_at=None if message.kind == "status" else message.expires_at,
        message_id=message.id,
        kind=message.kind,
        seq=message.seq,
    )


class MqttSink:
    """Hands messages to a publisher's bounded outbox (never blocks)."""

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def emit(self, message: Outgoing) -> None:
        self.publisher.publish(mqtt_message(message))


def default_source(stream: StreamConfig, cfg: ServiceConfig) -> FrameSource:
    size = (cfg.frame_size, cfg.frame_size)
    return open_source(stream.source, realtime=cfg.realtime, output_size=size)


@dataclass
class StreamRun:
    config: StreamConfig
    pipeline: StreamPipeline
    publisher: MqttPublisher
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class Service:
    def __init__(
        self,
        cfg: ServiceConfig,
        *,
        planner_factory: Callable[[], Planner],
        source_factory: SourceFactory = default_source,
        extra_sinks: SinkFactory | None = None,
        planner_config: PlannerConfig | None = None,
    ) -> None:
        """``planner_config``: the planner section the pipelines read (NHFM bounds, keyframes,
        refresh interval, text deadline): the same one the planners were built from."""
        if not cfg.streams:
            raise StreamerError(
                "no streams configured: give --source, or [[service.streams]] in a config file"
            )
        self.cfg = cfg
        self.planner_factory = planner_factory
        self.source_factory = source_factory
        self.extra_sinks = extra_sinks
        self.pipeline_settings = PipelineSettings.from_config(
            planner_config or PlannerConfig(), refresh_text=cfg.refresh_text
        )
        self.captions: CaptionWorker | None = None  # one per process, off the ranking path
        self.broker_url: str | None = cfg.mqtt.broker
        self._embedded: Any = None
        self._embedded_protocol = False  # amqtt speaks MQTT 3.1.1 only
        self.runs: list[StreamRun] = []
        # bad input (a malformed timeline, a missing checkpoint) fails here, before anything starts
        self._recognizers = {s.room: self._recognizer(s) for s in cfg.streams}
        self.started = asyncio.Event()
        self.webrtc_rooms = [s.room for s in cfg.streams if s.source == "webrtc"]
        if self.webrtc_rooms and cfg.web.enabled is False:
            raise StreamerError(f"room {self.webrtc_rooms[0]}: source webrtc needs service.web.enabled")
        self.web: WebServer | None = None  # the page and WebRTC ingest, when enabled

    # ---- setup -------------------------------------------------------------------------------
    def _recognizer(self, stream: StreamConfig) -> Recognizer:
        spec = stream.recognizer or self.cfg.recognizer
        if not spec:
            raise StreamerError(
                f"room {stream.room}: no recognizer (give --recognizer timeline:FILE or checkpoint:FILE)"
            )
        recognizer = create_recognizer(spec, self.cfg.recognizer_rate_hz)
        trained_on = getattr(recognizer, "trained_on", None)
        if trained_on == "synthetic" and stream.source != "synthetic" and not self.cfg.force_recognizer:
            raise StreamerError(
                f"room {stream.room}: recognizer {spec} was trained on synthetic frames and would guess on "
                f"real video ({stream.source}); train it on real frames, or force it with --force-recognizer "
                "(service.force_recognizer=true)"
            )
        return recognizer

    def _broker_settings(self) -> BrokerSettings:
        assert self.broker_url is not None
        base = parse_broker_url(self.broker_url)
        m = self.cfg.mqtt
        return replace(
            base,
            tls=base.tls or bool(m.ca_file),
            ca_file=m.ca_file,
            cert_file=m.cert_file,
            key_file=m.key_file,
            tls_insecure=m.tls_insecure,
            protocol="3.1.1" if self._embedded_protocol else m.protocol,
        )

    async def _start_web(self) -> None:
        """The page (and WebRTC ingest) before the streams: on with a webrtc stream or web.enabled."""
        if not (self.cfg.web.enabled or self.webrtc_rooms):
            return
        from streamer.web.server import WebServer

        rooms = [s.room for s in self.cfg.streams]
        self.web = WebServer(self.cfg.web, rooms, self.webrtc_rooms, frame_size=self.cfg.frame_size)
        await self.web.start()

    def _build(self, stream: StreamConfig) -> StreamRun:
        recognizer = self._recognizers[stream.room]
        if self.web is not None and stream.source == "webrtc":
            source: FrameSource = self.web.source_for(stream.room)
        else:
            source = self.source_factory(stream, self.cfg)
        payloads = PayloadFactory(stream.room, recommendation_ttl_s=self.cfg.recommendation_ttl_s)
        topics = Topics(stream.room)

        def will() -> OutMessage:  # repeats the newest status seq, marked will: it wins the tie
            payload = payloads.status("offline", "unknown", "connection lost", will=True)
            return mqtt_message(outgoing(topics.status, payload, retain=True))

        def on_connect() -> list[OutMessage]:  # the announcement (the page gets it too)
            # ``pipeline`` is bound below, before the publisher runs: a closure, not a holder
            message = outgoing(topics.status, pipeline.status_payload("online"), retain=True)
            if self.web is not None:
                self.web.hub.emit(message)
            return [mqtt_message(message)]

        publisher = MqttPublisher(
            self._broker_settings(),
            client_id=f"{self.cfg.mqtt.client_id_prefix}-{stream.room}-{payloads.session_id[:8]}",
            outbox_size=self.cfg.mqtt.outbox_size,
            will=will,
            on_connect_messages=on_connect,
            publish_timeout_s=self.cfg.mqtt.publish_timeout_s,
            will_delay_s=self.cfg.mqtt.will_delay_s,
        )
        sinks: list[PayloadSink] = [MqttSink(publisher)]
        if self.extra_sinks:
            sinks += list(self.extra_sinks(stream.room))
        if self.web is not None:
            sinks.append(self.web.sink_for(stream.room))
        planner = self.planner_factory()
        self._take_captioner(planner)
        pipeline = StreamPipeline(
            room=stream.room,
            source=source,
            recognizer=recognizer,
            planner=planner,
            sinks=sinks,
            payloads=payloads,
            segmenter=self.cfg.oracle_segmenter if recognizer.has_ground_truth else self.cfg.segmenter,
            settings=self.pipeline_settings,
            captions=self.captions,
        )
        if isinstance(source, WebRTCSourceLike):  # the room's video health reaches the status topic
            source.on_health = lambda state, reason: self._video_health(pipeline, state, reason)
        return StreamRun(stream, pipeline, publisher)

    def _take_captioner(self, planner: Planner) -> None:
        """IndirNHFM's captioner moves out of the engine (where it would caption on the ranking
        path) into one caption worker for the whole process, shared by every room."""
        take = getattr(planner.engine, "take_captioner", None)
        captioner = take() if take is not None else None
        if captioner is None or self.captions is not None:
            return
        self.captions = CaptionWorker(captioner.describe, frames=captioner.frames, model=captioner.model)
        log.info("service.captioner", model=captioner.model, frames=captioner.frames)

    # ---- run ---------------------------------------------------------------------------------
    async def run(
        self, stop: asyncio.Event | None = None, *, exit_when_done: bool = True
    ) -> list[StreamState]:
        """Run every stream; return when ``stop`` is set, or when all streams are done and
        ``exit_when_done``. Always publishes an explicit offline status before returning."""
        stop = stop or asyncio.Event()
        if self.broker_url is None:
            from streamer.mqtt.broker import EmbeddedBroker

            self._embedded = EmbeddedBroker(port=self.cfg.mqtt.embedded_port, fallback=True)
            self.broker_url = await self._embedded.start()
            self._embedded_protocol = True
            log.info("service.embedded_broker", url=self.broker_url)
        for stream in self.cfg.streams:  # how a person watches what this service publishes
            mosquitto_sub, llm_sap_watch = watch_commands(self._broker_settings(), stream.room)
            log.info("service.watch", room=stream.room, mosquitto_sub=mosquitto_sub, llm_sap=llm_sap_watch)
        try:
            await self._start_web()
            self.runs = [self._build(s) for s in self.cfg.streams]
            for run in self.runs:
                mqtt_task = asyncio.create_task(run.publisher.run(), name=f"mqtt-{run.config.room}")
                mqtt_task.add_done_callback(lambda _, run=run: self._publisher_ended(run))  # type: ignore[misc]
                run.tasks.append(mqtt_task)
            for run in self.runs:
                run.tasks.append(asyncio.create_task(self._run_stream(run), name=f"stream-{run.config.room}"))
            self.started.set()
            streams_done = asyncio.gather(*(r.tasks[1] for r in self.runs), return_exceptions=True)
            stopper = asyncio.create_task(stop.wait())
            waiting: set[asyncio.Future[Any]] = {stopper}
            if exit_when_done:
                waiting.add(streams_done)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                log.info("service.stopping")
                await asyncio.gather(*(r.pipeline.source.stop() for r in self.runs), return_exceptions=True)
            results = await streams_done
            stopper.cancel()
            for run, result in zip(self.runs, results, strict=True):
                if isinstance(result, Exception):  # _run_stream never raises: a bug, still not silent
                    self._stream_failed(run, _one_line(result), result)
            return [r.pipeline.state for r in self.runs]
        finally:
            await self._shutdown()

    async def _run_stream(self, run: StreamRun) -> None:
        """One stream, start to end. Never raises (but for cancellation): any failure, a source
        that cannot start or an exception in a pipeline stage, marks the stream ``failed`` with its
        reason on the status topic and the page, and is logged (with its traceback when unexpected)."""
        pipeline = run.pipeline
        try:
            await pipeline.source.start()
        except StreamerError as exc:
            pipeline.source.stats.failed = pipeline.source.stats.failed or str(exc)
            self._stream_failed(run, str(exc))
            pipeline.planner.close()
            return
        except Exception as exc:  # a bug in a source: say so, with the traceback
            self._stream_failed(run, _one_line(exc), exc)
            pipeline.planner.close()
            return
        try:
            await pipeline.run()
            if run.publisher.failed:  # the broker refused us for good: the room has failed
                self._stream_failed(run, run.publisher.failed)
        except Exception as exc:  # a stage crashed: the stream is over, and everyone must know
            self._stream_failed(run, _one_line(exc), exc)
        finally:
            with contextlib.suppress(Exception):
                await pipeline.source.stop()
            pipeline.planner.close()

    def _stream_failed(self, run: StreamRun, reason: str, exc: BaseException | None = None) -> None:
        """Mark ``run``'s stream failed: state, status topic (and page), error log."""
        state = run.pipeline.state
        state.stream, state.reason = "failed", reason
        log.error("stream.failed", room=run.config.room, reason=reason, exc_info=exc)
        try:
            run.pipeline.emit_status()
        except Exception:  # the status could not even be built: the log above is what is left
            log.exception("stream.failed_status_not_sent", room=run.config.room)

    def _publisher_ended(self, run: StreamRun) -> None:
        """The MQTT supervisor ended on its own: a permanent refusal (credentials, ACL). Nothing
        this room produces can reach its subscribers, so the room stops, failed."""
        if run.publisher.failed and run.pipeline.state.stream not in ("ended", "failed"):
            log.error("stream.mqtt_refused", room=run.config.room, reason=run.publisher.failed)
            stopping = asyncio.ensure_future(run.pipeline.source.stop())
            run.tasks.append(stopping)

    @staticmethod
    def _video_health(pipeline: StreamPipeline, health: str, reason: str | None) -> None:
        """A live source's health (``stalled`` / ``live``) as the stream's status: ``stalled``
        with the reason while the video is away, ``running`` again when it returns."""
        if pipeline.state.stream not in ("running", "stalled"):
            return
        stream = "stalled" if health == "stalled" else "running"
        if stream == pipeline.state.stream and reason == pipeline.state.reason:
            return
        pipeline.state.stream, pipeline.state.reason = stream, reason if stream == "stalled" else None
        log.warning("stream.stalled", room=pipeline.room, reason=reason) if stream == "stalled" else log.info(
            "stream.recovered", room=pipeline.room
        )
        pipeline.emit_status()

    @property
    def failed_streams(self) -> list[tuple[str, str]]:
        """(room, reason) of every stream that failed (commands exit 1 when there is one)."""
        return [
            (r.config.room, r.pipeline.state.reason or "failed")
            for r in self.runs
            if r.pipeline.state.stream == "failed"
        ]

    async def _shutdown(self) -> None:
        for run in self.runs:
            pipeline, built = run.pipeline, list[Outgoing]()

            def final(
                dropped: dict[str, int], pipeline: StreamPipeline = pipeline, built: list[Outgoing] = built
            ) -> list[OutMessage]:
                """The explicit offline, built once the drain is over: it says what was lost."""
                payload = pipeline.payloads.status(
                    "offline", pipeline.state.stream, pipeline.state.reason or "shutdown", dropped=dropped
                )
                built.append(outgoing(pipeline.topics.status, payload, retain=True))
                return [mqtt_message(built[-1])]

            try:
                await run.publisher.close(final=final)
            except Exception:
                log.exception("service.mqtt_close_failed", room=run.config.room)
            if not built:  # not connected at the end: the pages still get the final status
                final(run.publisher.dropped)
            if self.web is not None:  # the pages see the same final status
                self.web.hub.emit(built[0])
            for task in run.tasks:
                task.cancel()
            await asyncio.gather(*run.tasks, return_exceptions=True)
        if self.captions is not None:
            await asyncio.to_thread(self.captions.close)
        if self.web is not None:
            await self.web.stop()
        if self._embedded is not None:
            await self._embedded.stop()


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, bounded (a status reason, not a traceback)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
