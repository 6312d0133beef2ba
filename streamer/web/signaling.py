"""WebRTC signaling: ``POST /offer?room=ID`` takes the peer's SDP offer and answers it.

One peer per room, several rooms at once. A new peer is a candidate until its first frame: only
then does it replace the room's peer (whose connection is closed), so an offer that never completes
ICE leaves the live camera alone; a candidate silent for the connect timeout is closed. A peer
whose connection fails or closes leaves its room ``stalled`` (status topic and page) until a new
offer delivers frames: the page's autostart reconnects. Any malformed body is a 400 with one line
(deeply nested JSON included). No STUN/TURN: ``RTCConfiguration(iceServers=[])`` (an OR network is
local, and aiortc would otherwise try Google's STUN server). Two adjustments measured on this
machine (../shared/notes/streaming-on-this-machine.md):
- aioice never offers 127.0.0.1, so a peer on the same machine gets loopback candidates added;
- Chromium starts VP8 at ~250 kbps and drops to 427x240, so the answer SDP carries
  ``x-google-{start,min,max}-bitrate`` for the video codecs.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from streamer.exceptions import SourceError

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from streamer.sources.webrtc import WebRTCSource

log = structlog.get_logger(__name__)

MAX_SDP_CHARS = 64_000
BITRATE_CODECS = ("VP8", "H264")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) ([A-Za-z0-9-]+)/90000")
_LOOPBACK_CLIENTS = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


class OfferError(ValueError):
    """An offer the endpoint cannot use (answered with 400 and this message)."""


def add_bitrate_fmtp(sdp: str, *, start_kbps: int, min_kbps: int, max_kbps: int) -> str:
    """``sdp`` with x-google start/min/max bitrates on every VP8 and H.264 payload type (an
    existing ``a=fmtp`` line is extended, else one is added after the ``a=rtpmap`` line)."""
    params = (
        f"x-google-start-bitrate={start_kbps};x-google-min-bitrate={min_kbps};x-google-max-bitrate={max_kbps}"
    )
    lines = sdp.splitlines()
    types = {m[1] for line in lines if (m := _RTPMAP.fullmatch(line)) and m[2].upper() in BITRATE_CODECS}
    with_fmtp = {line.split()[0][len("a=fmtp:") :] for line in lines if line.startswith("a=fmtp:")}
    out: list[str] = []
    for line in lines:
        if (
            line.startswith("a=fmtp:")
            and line.split()[0][len("a=fmtp:") :] in types
            and "x-google" not in line
        ):
            line = f"{line};{params}"
        out.append(line)
        rtpmap = _RTPMAP.fullmatch(line)
        if rtpmap and rtpmap[1] in types and rtpmap[1] not in with_fmtp:
            out.append(f"a=fmtp:{rtpmap[1]} {params}")
    return "\r\n".join(out) + "\r\n"


async def add_loopback_candidates(pc: RTCPeerConnection) -> int:
    """Gather ``pc``'s ICE candidates now, plus one on 127.0.0.1, which aioice never offers:
    without it two peers on a loopback-only machine have no candidate pair. Call after the
    transceivers exist and before ``setLocalDescription``. Returns the candidates added.

    aiortc exposes no option for this, so it reaches into the gatherer's aioice connection
    (aiortc 1.x); if that changes, it logs and adds nothing (non-loopback networks still work).
    """
    added, seen = 0, set()
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        if id(gatherer) in seen or gatherer.state != "new":
            continue
        seen.add(id(gatherer))
        connection = getattr(gatherer, "_connection", None)
        local = getattr(connection, "_local_candidates", None)
        if connection is None or not isinstance(local, list):
            log.warning("webrtc.loopback_candidates_unavailable", reason="aiortc internals changed")
            return added
        await connection.gather_candidates()
        extra = await connection.get_component_candidates(component=1, addresses=["127.0.0.1"])
        local.extend(extra)
        added += len(extra)
    return added


async def read_json_body(request: web.Request) -> object:
    """The request's JSON body, or a 400 with one line: whatever is wrong with it (not UTF-8, not
    JSON, nested deeper than any offer: ``json`` raises RecursionError for that)."""
    try:
        text = await request.text()
        return json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _error(web.HTTPBadRequest, "request body is not valid JSON") from None


def parse_offer(body: object) -> tuple[str, str]:
    """(sdp, type) from the request body, or ``OfferError`` saying what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
        raise OfferError('request body must be JSON {"sdp": "...", "type": "offer"}')
    sdp, kind = body["sdp"], body.get("type")
    if kind != "offer":
        raise OfferError(f"type must be 'offer', got {kind!r}")
    if len(sdp) > MAX_SDP_CHARS:
        raise OfferError(f"SDP offer is {len(sdp)} characters, more than {MAX_SDP_CHARS}")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("malformed SDP offer: it must start with 'v=0'")
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        raise OfferError("the SDP offer has no video section (m=video): send a camera or a screen")
    return sdp, kind


def _offer_error(exc: Exception) -> str:
    """One line for the client: why its offer cannot be answered."""
    if isinstance(exc, OfferError):
        return str(exc)
    if "send parameters" in str(exc):  # aiortc: no codec in common
        return "no video codec in common with the service: offer VP8 or H.264"
    return f"malformed SDP offer: {exc or type(exc).__name__}"


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


class Signaling:
    """Peer connections per room, feeding each room's ``WebRTCSource``."""

    def __init__(self, sources: Mapping[str, WebRTCSource], *, bitrate_kbps: tuple[int, int, int]) -> None:
        self.sources = sources
        self.bitrate_kbps = bitrate_kbps  # start, min, max
        self.peers: dict[str, tuple[str, RTCPeerConnection]] = {}  # room -> (peer id, connection)
        self._connections: set[RTCPeerConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle_offer(self, request: web.Request) -> web.Response:
        room = request.query.get("room", "")
        source = self.sources.get(room)
        if source is None:
            known = ", ".join(self.sources) or "none"
            raise _error(
                web.HTTPNotFound, f"room {room!r} takes no WebRTC video here (WebRTC rooms: {known})"
            )
        if not source.accepting:
            raise _error(web.HTTPConflict, f"room {room}: the WebRTC stream has ended; restart the service")
        try:
            sdp, kind = parse_offer(await read_json_body(request))
        except OfferError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        peer = uuid.uuid4().hex[:8]
        pc, video = await self._answer(room, peer, sdp, kind, loopback=request.remote in _LOOPBACK_CLIENTS)

        def live() -> None:  # its first frame: it is the room's peer now, the previous one goes
            previous = self.peers.get(room)
            self.peers[room] = (peer, pc)
            if previous is not None and previous[0] != peer:
                log.info("webrtc.peer_replaced", room=room, old_peer=previous[0], peer=peer)
                self._spawn(self._close(previous[1]))

        try:
            source.attach(video, peer=peer, on_live=live, on_dropped=lambda: self._spawn(self._close(pc)))
        except SourceError as exc:
            await self._close(pc)
            raise _error(web.HTTPConflict, str(exc)) from None
        log.info("webrtc.offer_answered", room=room, peer=peer, remote=request.remote)
        answer = pc.localDescription
        start, low, high = self.bitrate_kbps
        return web.json_response(
            {
                "sdp": add_bitrate_fmtp(answer.sdp, start_kbps=start, min_kbps=low, max_kbps=high),
                "type": "answer",
            }
        )

    async def _answer(
        self, room: str, peer: str, sdp: str, kind: str, *, loopback: bool
    ) -> tuple[RTCPeerConnection, Any]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._connections.add(pc)
        tracks: list[Any] = []
        pc.on("track", tracks.append)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.info("webrtc.connection_state", room=room, peer=peer, state=state)
            if state not in ("failed", "closed"):
                return
            if self.peers.get(room, ("",))[0] == peer:
                del self.peers[room]
            self.sources[room].peer_lost(peer, f"connection {state}")  # stalled, or a candidate dropped
            await self._close(pc)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
            video = next((t for t in tracks if t.kind == "video"), None)
            if video is None:
                raise OfferError("the SDP offer has no video track")
            for track in tracks:
                if track is not video:  # never left unread: aiortc queues received media without bound
                    self._spawn(_drain(track))
            if loopback:
                await add_loopback_candidates(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError and its own errors for bad SDP
            self._connections.discard(pc)
            await pc.close()
            message = _offer_error(exc)
            log.warning("webrtc.offer_rejected", room=room, reason=message)
            raise _error(web.HTTPBadRequest, message) from None
        return pc, video

    async def _close(self, pc: RTCPeerConnection) -> None:
        self._connections.discard(pc)
        await pc.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Close every peer connection (on shutdown)."""
        self.peers.clear()
        connections, self._connections = list(self._connections), set()
        await asyncio.gather(*(pc.close() for pc in connections), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


SIGNALING = web.AppKey("signaling", Signaling)


async def _drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
