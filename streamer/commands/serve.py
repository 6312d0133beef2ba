"""``llm-sap serve``: the live service, until SIGINT/SIGTERM (drain, publish offline).

Exit codes: 0 every stream ran (and ended, or was stopped); 1 a stream failed (its status said
``failed`` with the reason, the log has it); 2 bad input, before anything started."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import structlog
from rich.console import Console

from planner.cli_flags import PLANNER_FLAGS, add_planner_arguments, flag_overrides
from planner.factory import SharedPlanning, load_prior
from streamer.config import LiveConfig
from streamer.exceptions import SourceError, StreamFailedError
from streamer.service import Service
from streamer.sources import local_file
from streamer.sources.video import check_video_file

log = structlog.get_logger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="video file, rtsp://... URL, synthetic, or webrtc (the page's camera) "
                   "(default: the streams of the config's service.streams)")  # fmt: skip
    p.add_argument("--room", default="or-1", help="operating-room id of --source, used in MQTT topics")
    p.add_argument("--broker", help="mqtt://user:pass@host:port or mqtts://... (default: embedded broker)")
    p.add_argument("--recognizer", help="timeline:FILE[#VIDEO], checkpoint:FILE or plugin:MODULE:CLASS "
                   "(default: the config's service.recognizer)")  # fmt: skip
    p.add_argument("--force-recognizer", action="store_true", default=None,
                   help="use a checkpoint trained on synthetic frames on real video anyway")  # fmt: skip
    add_planner_arguments(p)
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="pace files by their timestamps like a live feed (default on)")  # fmt: skip
    p.add_argument("--exit-when-done", action="store_true", help="exit once every stream has ended")
    p.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="turn the OR page (and WebRTC ingest) on, at this address, for every source. Without "
        "--bind the page is on only with a webrtc source or service.web.enabled=true, at "
        "service.web.bind (default: 127.0.0.1:8080)",
    )
    p.add_argument("--token", help="access token for the page and /offer "
                   "(default: none on loopback; generated and logged when bound off loopback)")  # fmt: skip


def stream_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.source:
        out.append(f"service.streams=[{{room={json.dumps(args.room)}, source={json.dumps(args.source)}}}]")
    keys = {
        **PLANNER_FLAGS,
        "broker": "service.mqtt.broker",
        "recognizer": "service.recognizer",
        "force_recognizer": "service.force_recognizer",
        "realtime": "service.realtime",
        "bind": "service.web.bind",
        "token": "service.web.token",
    }
    out += flag_overrides(args, keys)
    if getattr(args, "bind", None):
        out.append("service.web.enabled=true")
    return out


overrides = stream_overrides


def check_local_sources(cfg: LiveConfig) -> None:
    """A file that does not exist or is not a video (a still image, one frame, no duration) is bad
    input (exit 2), not a live stream failure."""
    for stream in cfg.service.streams:
        path = local_file(stream.source)
        if path is not None and not path.is_file():
            raise SourceError(f"video {path} not found")
        if path is not None:
            check_video_file(str(path))


def run(cfg: LiveConfig, args: argparse.Namespace, console: Console) -> int:
    check_local_sources(cfg)
    prior = load_prior(cfg.planner)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, _stop_once, stop, sig)
        try:
            await service.run(stop, exit_when_done=args.exit_when_done)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)  # asyncio restores SIG_DFL for SIGTERM: ours instead
                signal.signal(sig, _already_stopping)

    # the service checks its input (recognizers, rooms) before the model is loaded
    service = Service(cfg.service, planner_factory=lambda: planning.planner(), planner_config=cfg.planner)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        with SharedPlanning(cfg.planner, prior) as planning:
            asyncio.run(main())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("serve.stopped")
    return exit_code(service)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_once(stop: asyncio.Event, sig: signal.Signals) -> None:
    """The first SIGINT/SIGTERM stops the service (drain, offline, exit); later ones are logged."""
    if stop.is_set():
        log.warning("serve.signal_ignored", signal=sig.name, reason="already stopping")
    stop.set()


def _already_stopping(signum: int, frame: object) -> None:
    """After the event loop: the service is closing its planner; a second signal must not cut it."""
    log.warning("serve.signal_ignored", signal=signal.Signals(signum).name, reason="already stopping")


def exit_code(service: Service) -> int:
    """0, or StreamFailedError (exit 1) naming every failed room and why."""
    failed = service.failed_streams
    if failed:
        raise StreamFailedError("; ".join(f"room {room} failed: {reason}" for room, reason in failed))
    return 0
