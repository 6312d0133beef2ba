"""The page's live feed: an ``EventHub`` (a ``PayloadSink``) fans payloads out per room to
server-sent-event clients, and ``events_handler`` serves ``GET /events?room=ID``.

Policy: ``emit`` never blocks the pipeline. Each client has its own bounded queue; when a page
falls behind, its oldest events are dropped (counted per client). A page that connects late gets
the room's state first: the latest status, the clip history and the latest recommendation (the
refreshed one with its rationale, when there is one), so it shows what an MQTT subscriber would
see from the retained topics, and more. At most ``max_clients`` pages per room are connected at a
time (each holds a queue): one more is answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiohttp import web

from streamer.messages import Outgoing

log = structlog.get_logger(__name__)

PING_INTERVAL_S = 2.0  # a page that hears nothing for a few intervals shows "offline"
CLIP_HISTORY = 500  # clip events kept per room for late pages


def sse_event(kind: str, data: dict[str, Any] | bytes, event_id: str | None = None) -> str:
    """One server-sent event: ``data`` a message's JSON bytes (the very bytes MQTT sends) or, for
    the hub's own events, a dict. JSON is one line (``json.dumps`` escapes newlines)."""
    head = f"id: {event_id}\n" if event_id else ""
    text = (
        data.decode()
        if isinstance(data, bytes)
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    )
    return f"{head}event: {kind}\ndata: {text}\n\n"


class SSEClient:
    """One connected page: a bounded queue of encoded events, oldest dropped when full."""

    def __init__(self, room: str, maxlen: int) -> None:
        self.room = room
        self.queue: deque[str] = deque(maxlen=maxlen)
        self.dropped = 0
        self.closed = False
        self._ready = asyncio.Event()

    def offer(self, event: str) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next_batch(self, timeout_s: float) -> list[str] | None:
        """Everything queued (waiting up to ``timeout_s``; [] on timeout); None once closed."""
        if not self.queue and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        if self.closed:
            return None
        batch = list(self.queue)
        self.queue.clear()
        return batch


class RoomFullError(Exception):
    """A room already has ``max_clients`` pages connected."""


class _RoomState:
    def __init__(self) -> None:
        self.status: Outgoing | None = None
        self.recommendation: Outgoing | None = None
        self.clips: deque[Outgoing] = deque(maxlen=CLIP_HISTORY)
        self.clients: set[SSEClient] = set()


class EventHub:
    """Per-room fan-out of the pipeline's payloads to pages. Call ``emit`` on the event loop."""

    def __init__(
        self,
        rooms: Iterable[str],
        *,
        client_queue: int = 256,
        max_clients: int = 32,
        video_info: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        """``video_info(room)``: the room's ingest counters, sent to pages with every ping."""
        self.client_queue = client_queue
        self.max_clients = max_clients
        self.video_info = video_info
        self._rooms = {room: _RoomState() for room in rooms}
        self.emitted = 0

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self._rooms)

    def clients(self, room: str | None = None) -> list[SSEClient]:
        states = [self._rooms[room]] if room is not None else list(self._rooms.values())
        return [c for state in states for c in state.clients]

    # ---- PayloadSink -------------------------------------------------------------------------
    def emit(self, message: Outgoing) -> None:
        state = self._rooms.get(str(message.payload.get("room")))
        kind = message.kind
        if state is None or kind not in ("status", "clip", "recommendation"):
            return
        if kind == "recommendation":
            state.recommendation = message
            if message.retained_copy:  # the retained copy of one just sent: not sent twice
                return
        elif kind == "status":
            state.status = message
        else:
            state.clips.append(message)
        self.emitted += 1
        event = sse_event(kind, message.body, message.id)
        for client in state.clients:
            client.offer(event)

    # ---- clients -----------------------------------------------------------------------------
    def subscribe(self, room: str) -> SSEClient:
        """A new client, its queue primed with the room's state (status, clips, recommendation)."""
        state = self._rooms[room]
        if len(state.clients) >= self.max_clients:
            raise RoomFullError(f"room {room} has {len(state.clients)} pages open, the most allowed")
        client = SSEClient(room, self.client_queue)
        client.offer(sse_event("hello", {"room": room, "server_time": time.time()}))
        for message in (state.status, *state.clips, state.recommendation):
            if message is not None:
                client.offer(sse_event(message.kind, message.body, message.id))
        state.clients.add(client)
        return client

    def ping(self, room: str) -> str:
        video = self.video_info(room) if self.video_info is not None else None
        return sse_event("ping", {"server_time": time.time(), "video": video})

    def unsubscribe(self, client: SSEClient) -> None:
        self._rooms[client.room].clients.discard(client)

    def close(self) -> None:
        """End every client's stream (on shutdown)."""
        for client in self.clients():
            client.close()


async def events_handler(request: web.Request) -> web.StreamResponse:
    """``GET /events?room=ID``: the room's payloads as server-sent events, state first."""
    hub = request.app[HUB]
    room = request.query.get("room", "")
    if room not in hub.rooms:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"room {room!r} is not served here (rooms: {', '.join(hub.rooms)})"}),
            content_type="application/json",
        )
    try:
        client = hub.subscribe(room)
    except RoomFullError as exc:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"{exc} (service.web.max_pages_per_room)"}),
            content_type="application/json",
            headers={"Retry-After": "5"},
        ) from None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
    except BaseException:
        hub.unsubscribe(client)
        raise
    log.info("web.events_connected", room=room, clients=len(hub.clients(room)))
    try:
        while (batch := await client.next_batch(PING_INTERVAL_S)) is not None:
            text = "".join(batch) if batch else hub.ping(room)
            await response.write(text.encode())
    except ConnectionResetError:  # the page went away
        pass
    finally:
        hub.unsubscribe(client)
        log.info("web.events_disconnected", room=room, dropped=client.dropped)
    return response


HUB = web.AppKey("hub", EventHub)
