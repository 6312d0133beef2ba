"""A Python WebRTC sender for the service's ``POST /offer`` (a capture box, tests, the benchmark).

``await publish(base_url, room, track, token=...)`` connects an aiortc video track to a room and
returns the peer connection (close it to disconnect). ``ClipTrack`` plays a video file as a live
camera at its own frame rate (decoded in a worker thread, never on the event loop) and records
the wall time each frame was handed to the encoder, keyed by its stream time.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from streamer.web.signaling import add_loopback_candidates

VIDEO_CLOCK = 90_000


class ClipTrack(VideoStreamTrack):
    """A video file as a live camera: looped, paced at ``fps``, decoded in a worker thread.

    ``sent_at[i]`` is the wall time frame ``i`` (stream time ``i / fps``) left ``recv()``.
    """

    def __init__(self, path: str | Path, *, fps: float = 25.0, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.fps = fps
        self.size = size
        self.sent_at: list[float] = []
        self._frames: Iterator[Any] | None = None
        self._lock = threading.Lock()
        self._origin: float | None = None

    def _decoded(self) -> Iterator[Any]:
        import av

        while True:
            with av.open(self.path) as container:
                for frame in container.decode(video=0):
                    if self.size is not None:
                        frame = frame.reformat(self.size[0], self.size[1])
                    yield frame

    def _next_decoded(self) -> Any:
        with self._lock:
            if self._frames is None:
                self._frames = self._decoded()
            return next(self._frames)

    async def recv(self) -> Any:
        index = len(self.sent_at)
        if self._origin is None:
            self._origin = time.monotonic()
        frame = await asyncio.to_thread(self._next_decoded)
        delay = self._origin + index / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame.pts = round(index * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent_at.append(time.time())
        return frame


async def publish(
    base_url: str, room: str, track: Any, *, token: str | None = None, timeout_s: float = 10.0
) -> RTCPeerConnection:
    """Send ``track`` to ``room``; returns the connected ``RTCPeerConnection``. Raises
    ``RuntimeError`` with the server's message if the offer is refused."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(track, direction="sendonly")
    try:
        await add_loopback_candidates(pc)
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{base_url}/offer", params={"room": room}, json=offer, headers=headers) as response,
        ):
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"offer refused ({response.status}): {body.get('error')}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    except BaseException:
        await pc.close()
        raise
    return pc
