"""A WebRTC room that recovers: an offer that never connects leaves the live camera alone, the
frame watchdog marks a silent room ``stalled`` and it recovers when frames return, a malformed
offer body is a 400 with one line. (A lost peer and a new offer: tests/test_web.py; the real
browser: tests/test_browser.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest

from streamer.config import WebConfig
from streamer.web.server import WebServer
from streamer.web.signaling import SIGNALING

aiortc = pytest.importorskip("aiortc", reason="aiortc not installed (pip install -e '.[stream]')")
pytestmark = pytest.mark.timeout(60)
ROOM = "or-r"


class PausableTrack(aiortc.VideoStreamTrack):  # type: ignore[misc]
    """A synthetic camera that can stop sending (a frozen encoder, a cable pulled) and resume."""

    def __init__(self) -> None:
        super().__init__()
        self.running = asyncio.Event()
        self.running.set()
        self.sent = 0

    async def recv(self) -> Any:
        import av

        await self.running.wait()
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), self.sent % 256, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


async def until(predicate: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_an_offer_that_never_connects_does_not_replace_the_live_camera() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    from streamer.benchmarks.webrtc_client import publish

    server = WebServer(WebConfig(bind="127.0.0.1:0"), [ROOM], [ROOM])
    source = server.source_for(ROOM)
    source.connect_timeout_s = 1.0
    url = await server.start()
    await source.start()
    live = ghost = None
    try:
        live = await publish(url, ROOM, PausableTrack())
        await until(lambda: source.received >= 10, 10)
        live_peer = source.peer
        # an offer whose ICE can never complete: no loopback candidate, and the answer is never applied
        ghost = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        ghost.addTransceiver(PausableTrack(), direction="sendonly")
        await ghost.setLocalDescription(await ghost.createOffer())
        offer = {"sdp": ghost.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/offer", params={"room": ROOM}, json=offer) as response:
                assert response.status == 200
            received = source.received
            await asyncio.sleep(0.5)  # answered, not yet connected: the live camera goes on
            assert source.peer == live_peer and source.received > received
            await asyncio.sleep(1.5)  # past the connect timeout: the candidate is dropped, closed
        signaling = server.app[SIGNALING]
        assert source.peer == live_peer and signaling.peers[ROOM][0] == live_peer
        assert len(signaling._connections) == 1 and source.health == "live"
        received = source.received
        await asyncio.sleep(0.5)
        assert source.received > received
    finally:
        for pc in (live, ghost):
            if pc is not None:
                await pc.close()
        await server.stop()
        await source.stop()


async def test_the_frame_watchdog_stalls_a_silent_room_and_it_recovers() -> None:
    from streamer.benchmarks.webrtc_client import publish

    server = WebServer(WebConfig(bind="127.0.0.1:0"), [ROOM], [ROOM])
    source = server.source_for(ROOM)
    source.frame_timeout_s = 1.0
    health: list[tuple[str, str | None]] = []
    source.on_health = lambda state, reason: health.append((state, reason))
    url = await server.start()
    await source.start()
    track = PausableTrack()
    pc = None
    try:
        pc = await publish(url, ROOM, track)
        await until(lambda: source.received >= 10, 10)
        track.running.clear()  # the camera freezes; the connection stays up
        await until(lambda: source.health == "stalled", 5)
        assert health[-1][0] == "stalled" and "no video for" in (health[-1][1] or "")
        track.running.set()
        await until(lambda: source.health == "live", 5)
        assert [state for state, _ in health] == ["live", "stalled", "live"] and source.recoveries == 1
    finally:
        if pc is not None:
            await pc.close()
        await server.stop()
        await source.stop()


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"sdp": ' * 20_000, b"\xff\xfe not utf-8", b"", b"null", b'{"sdp": 1}'],
    ids=["deep-list", "deep-object", "not-utf8", "empty", "null", "sdp-not-text"],
)
async def test_any_malformed_offer_body_is_a_400_with_one_line(body: bytes) -> None:
    server = WebServer(WebConfig(bind="127.0.0.1:0"), [ROOM], [ROOM])
    url = await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/offer", params={"room": ROOM}, data=body) as response,
        ):
            assert response.status == 400
            error = (await response.json())["error"]
        assert "\n" not in error and len(error) < 200
    finally:
        await server.stop()
