"""The web app as a part of the service: ``WebServer.start()`` / ``stop()``, plus each room's
WebRTC source (``source_for``) and the page's payload sink (``sink_for``).

When bound off loopback with no token configured, a token is generated at start and the page
URL with it is logged: the page and the signaling endpoint are never open to a network by default.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import ssl
from collections.abc import Iterable

import structlog
from aiohttp import web

from streamer.config import WebConfig, split_bind
from streamer.exceptions import StreamerError
from streamer.frames import DEFAULT_FRAME_SIZE
from streamer.pipeline import PayloadSink
from streamer.sources import open_source
from streamer.sources.webrtc import WebRTCSource
from streamer.web.app import WebSettings, create_app
from streamer.web.hub import EventHub
from streamer.web.signaling import SIGNALING

log = structlog.get_logger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: treat it as reachable from the network


def resolve_token(cfg: WebConfig) -> tuple[str | None, bool]:
    """(token, generated): the configured token; else a new one when bound off loopback."""
    if cfg.token is not None:
        return cfg.token, False
    host, _ = split_bind(cfg.bind)
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


class WebServer:
    def __init__(
        self,
        cfg: WebConfig,
        rooms: Iterable[str],
        webrtc_rooms: Iterable[str],
        *,
        frame_size: int = DEFAULT_FRAME_SIZE,
    ) -> None:
        self.cfg = cfg
        self.token, self._generated = resolve_token(cfg)
        self.hub = EventHub(rooms, client_queue=cfg.client_queue, max_clients=cfg.max_pages_per_room)
        self.sources: dict[str, WebRTCSource] = {}
        for room in webrtc_rooms:
            source = open_source("webrtc", realtime=True, output_size=(frame_size, frame_size), room=room)
            assert isinstance(source, WebRTCSource)
            self.sources[room] = source
        settings = WebSettings(
            token=self.token,
            cors_origins=cfg.cors_origins,
            max_width=cfg.max_width,
            max_height=cfg.max_height,
            max_fps=cfg.max_fps,
            bitrate_kbps=(cfg.start_bitrate_kbps, cfg.min_bitrate_kbps, cfg.max_bitrate_kbps),
            secure_cookie=cfg.cert_file is not None,
            allowed_hosts=(*cfg.allowed_hosts, split_bind(cfg.bind)[0]),  # bound to a name: that name
        )
        self.app = create_app(self.hub, settings, sources=self.sources)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def source_for(self, room: str) -> WebRTCSource:
        try:
            return self.sources[room]
        except KeyError:
            raise StreamerError(f"room {room}: not a WebRTC room of the web server") from None

    def sink_for(self, room: str) -> PayloadSink:
        """The sink that feeds ``room``'s pages (one hub serves every room)."""
        if room not in self.hub.rooms:
            raise StreamerError(f"room {room}: not served by the web server")
        return self.hub

    async def start(self) -> str:
        """Listen on ``cfg.bind``; returns the base URL. Raises ``StreamerError`` if it cannot bind."""
        host, port = split_bind(self.cfg.bind)
        tls = self._tls_context()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=tls).start()
        except OSError as exc:
            await runner.cleanup()
            cause = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise StreamerError(f"web server cannot listen on {self.cfg.bind}: {cause}") from None
        self._runner = runner
        bound_port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{bound_port}"
        page = f"{self.url}/?room={self.hub.rooms[0]}" if self.hub.rooms else f"{self.url}/"
        if self._generated:
            log.warning("web.token_generated", reason="bound off loopback without service.web.token",
                        page=f"{page}&token={self.token}")  # fmt: skip
        log.info("web.listening", url=self.url, page=page, rooms=list(self.hub.rooms),
                 webrtc_rooms=list(self.sources), token=self.token is not None)  # fmt: skip
        return self.url

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.cfg.cert_file is None or self.cfg.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        except OSError as exc:  # ssl.SSLError included
            cause = exc.reason if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc))
            raise StreamerError(
                f"web server: cannot load {self.cfg.cert_file} / {self.cfg.key_file}: {cause}"
            ) from None
        return context

    async def stop(self) -> None:
        """Close the pages' event streams and the peers, then the listener."""
        self.hub.close()
        await self.app[SIGNALING].close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
