"""The web app: the OR monitoring page, its live feed, WebRTC signaling, health.

Endpoints (all require the token when one is configured):
- ``GET /`` the page (``index.html`` + ``app.js`` + ``app.css``, served from this package);
- ``GET /config?room=ID`` rooms and the page's capture limits;
- ``GET /events?room=ID`` server-sent events: the payloads that go to MQTT (``hub.py``);
- ``POST /offer?room=ID`` SDP offer in, answer out (``signaling.py``);
- ``GET /healthz`` per-room source and page counters.

Access: the token is accepted as ``Authorization: Bearer T``, ``?token=T`` or the cookie that
``GET /`` sets for the page's own requests (HttpOnly, SameSite=Strict), compared in constant time.
The ``Host`` header must name this server (DNS rebinding: a page on another origin that makes its
own DNS name point at 127.0.0.1 would otherwise read the feed): an IP address (the one a client
connected to; no rebinding goes through an address), ``localhost``, or a name in ``allowed_hosts``,
token or not. A request that carries an ``Origin`` other than this server's (scheme, host and
port) is refused unless the origin is in ``cors_origins``, which also get CORS headers (preflight,
errors and the event stream included). Request logs never carry the query string (it may hold
the token) and show control characters of the path escaped.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from streamer.sources.webrtc import WebRTCSource
from streamer.web.hub import HUB, EventHub, events_handler
from streamer.web.signaling import SIGNALING, Signaling

log = structlog.get_logger(__name__)

COOKIE = "llm_sap_token"
_PAGE_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
               "/app.css": ("app.css", "text/css")}  # fmt: skip
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class WebSettings:
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_width: int = 1280
    max_height: int = 720
    max_fps: float = 25.0
    bitrate_kbps: tuple[int, int, int] = (2000, 1000, 4000)  # start, min, max
    secure_cookie: bool = False  # served over HTTPS
    allowed_hosts: tuple[str, ...] = ()  # DNS names this server answers to (IPs and localhost always)


def _json_error(status: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


def request_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token") or request.cookies.get(COOKIE)


def token_matches(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def host_allowed(host_header: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Is ``host_header`` (``name[:port]``, ``[v6]:port``) an address, ``localhost``, or allowed?"""
    host = urlsplit(f"//{host_header}").hostname if host_header else None
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host in (h.lower() for h in allowed_hosts):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def printable(text: str, limit: int = 200) -> str:
    """``text`` for a log line: control and other unprintable characters escaped, bounded."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


CORS = web.RequestKey("cors_headers", dict)  # what the origin check decided, for streamed responses


async def _cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers on every response, the event stream included (it is prepared by its handler)."""
    response.headers.update(request.get(CORS, {}))


def _middlewares(settings: WebSettings) -> list[Any]:
    @web.middleware
    async def access_log(request: web.Request, handler: _Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            level = log.debug if status < 400 else log.info
            ms = round((time.perf_counter() - started) * 1000, 1)
            level("web.request", method=printable(request.method, 16), path=printable(request.path),
                  status=status, ms=ms)  # fmt: skip

    @web.middleware
    async def host_check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not host_allowed(host, settings.allowed_hosts):
            raise _json_error(
                web.HTTPMisdirectedRequest,
                f"host {printable(host, 100)!r} is not this server (add it to service.web.allowed_hosts)",
            )
        return await handler(request)

    @web.middleware
    async def origin_and_cors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        parts = urlsplit(origin) if origin else None
        same = parts is not None and parts.scheme == request.scheme and parts.netloc == request.host
        allowed = origin is not None and origin in settings.cors_origins
        if origin is not None and not same and not allowed:
            shown = printable(origin, 100)
            raise _json_error(web.HTTPForbidden, f"origin {shown} is not allowed (service.web.cors_origins)")
        extra = _cors_headers(origin) if allowed and origin else {}
        request[CORS] = extra
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=extra)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(extra)
            raise
        if not response.prepared:  # an event stream has sent its headers already
            response.headers.update(extra)
        return response

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if settings.token is not None and not token_matches(request_token(request), settings.token):
            raise _json_error(
                web.HTTPUnauthorized,
                "missing or wrong token: open the page with ?token=..., or send Authorization: Bearer ...",
                **{"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return [access_log, host_check, origin_and_cors, auth]


def create_app(
    hub: EventHub, settings: WebSettings, *, sources: Mapping[str, WebRTCSource] | None = None
) -> web.Application:
    """The app for ``hub``'s rooms; ``sources`` are the rooms that take WebRTC video (the others
    are monitor-only). ``app[SIGNALING].close()`` closes the peers on shutdown."""
    sources = dict(sources or {})
    signaling = Signaling(sources, bitrate_kbps=settings.bitrate_kbps)
    app = web.Application(middlewares=_middlewares(settings), client_max_size=256 * 1024)
    app.on_response_prepare.append(_cors_on_prepare)
    app[HUB] = hub
    app[SIGNALING] = signaling
    handlers = _Handlers(hub, settings, sources, signaling)
    hub.video_info = handlers.video_info
    for path in _PAGE_FILES:
        app.router.add_get(path, handlers.page)
    app.router.add_get("/config", handlers.config)
    app.router.add_get("/events", events_handler)
    app.router.add_post("/offer", signaling.handle_offer)
    app.router.add_get("/healthz", handlers.healthz)
    return app


class _Handlers:
    """The page, its configuration and the health check, over one hub and its WebRTC rooms."""

    def __init__(
        self, hub: EventHub, settings: WebSettings, sources: dict[str, WebRTCSource], signaling: Signaling
    ) -> None:
        self.hub, self.settings, self.sources, self.signaling = hub, settings, sources, signaling

    async def page(self, request: web.Request) -> web.Response:
        name, content_type = _PAGE_FILES[request.path]
        body = (resources.files("streamer.web") / name).read_text(encoding="utf-8")
        response = web.Response(text=body, content_type=content_type, headers={"Cache-Control": "no-cache"})
        if self.settings.token is not None and request.path == "/":  # the page's own requests carry it
            response.set_cookie(
                COOKIE,
                self.settings.token,
                httponly=True,
                samesite="Strict",
                path="/",
                secure=self.settings.secure_cookie,
            )
        return response

    async def config(self, request: web.Request) -> web.Response:
        hub, sources, s = self.hub, self.sources, self.settings
        room = request.query.get("room") or (hub.rooms[0] if hub.rooms else "")
        if room not in hub.rooms:
            raise _json_error(
                web.HTTPNotFound, f"room {room!r} is not served here (rooms: {', '.join(hub.rooms)})"
            )
        capture = {"max_width": s.max_width, "max_height": s.max_height, "max_fps": s.max_fps}
        rooms = [{"room": r, "webrtc": r in sources} for r in hub.rooms]
        return web.json_response(
            {"room": room, "rooms": rooms, "webrtc": room in sources, "capture": capture}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        rooms: dict[str, Any] = {}
        for room in self.hub.rooms:
            pages = {"pages": len(self.hub.clients(room)), "webrtc": room in self.sources}
            rooms[room] = pages | (self.video_info(room) or {})
        return web.json_response({"status": "ok", "rooms": rooms})

    def video_info(self, room: str) -> dict[str, Any] | None:
        source = self.sources.get(room)
        if source is None:
            return None
        s = source.stats
        peer = self.signaling.peers.get(room, (None,))[0]
        return {"peer": peer, "received": source.received, "decoded": s.decoded, "dropped": s.dropped,
                "failed": s.failed}  # fmt: skip
