"""Headless Chromium as a real WebRTC client of the page (the browser test and the benchmark).

``make_y4m`` turns a clip into the raw y4m that Chromium's fake camera plays (looped);
``chromium(url, profile, fake_video)`` runs Debian's chromium on the page with that camera and
yields its DevTools port; ``devtools(port)`` drives the page over the Chrome DevTools Protocol
(aiohttp websockets: no extra packages). Flags: ../shared/notes/streaming-on-this-machine.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp


def find_chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or next((p for p in ("/usr/bin/chromium",) if Path(p).is_file()), None)


def make_y4m(clip: Path, out: Path, *, seconds: float = 8.0, size: tuple[int, int] = (640, 360)) -> Path:
    """The first ``seconds`` of ``clip`` as raw y4m at ``size`` (640x360, 8 s at 25 fps: 69 MB)."""
    import av

    with av.open(str(clip)) as src, av.open(str(out), "w", format="yuv4mpegpipe") as dst:
        stream = src.streams.video[0]
        fps = round(float(stream.average_rate or 25))
        video = dst.add_stream("rawvideo", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        for frame in itertools.islice(src.decode(stream), int(seconds * fps)):
            for packet in video.encode(frame.reformat(size[0], size[1], "yuv420p")):
                dst.mux(packet)
        for packet in video.encode():
            dst.mux(packet)
    return out


@contextlib.contextmanager
def chromium(
    url: str,
    profile: Path,
    fake_video: Path | None = None,
    *,
    window: tuple[int, int] = (1280, 800),
    start_timeout_s: float = 20,
) -> Iterator[int]:
    """Headless chromium on ``url`` with a fake camera playing ``fake_video`` (or Chromium's test
    pattern); yields its DevTools port. ``profile`` (created) holds its profile and
    ``chromium.log``. The whole process group (renderers, GPU, utilities) is killed on exit."""
    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError("chromium not found (apt-get install chromium)")
    profile.mkdir(parents=True)
    args = [
        executable, "--headless", "--no-sandbox", "--disable-gpu",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        *([f"--use-file-for-fake-video-capture={fake_video}"] if fake_video else []),
        "--allow-loopback-in-peer-connection",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", "--disable-crash-reporter", f"--user-data-dir={profile}",
        "--remote-debugging-port=0", f"--window-size={window[0]},{window[1]}", url,
    ]  # fmt: skip
    log_path = profile / "chromium.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + start_timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"chromium did not start (exit {proc.returncode}): {tail}")
            time.sleep(0.05)
        yield int(port_file.read_text().split()[0])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])
        raise RuntimeError(f"{method}: DevTools connection closed")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises are awaited)."""
        reply = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            message = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"page error: {message}")
        return reply["result"].get("value")

    async def screenshot(self, width: int, height: int) -> bytes:
        """A PNG of the page at exactly ``width`` x ``height`` CSS pixels."""
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)  # fmt: skip
        await asyncio.sleep(0.3)  # one layout and paint at the new size
        return base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])


@contextlib.asynccontextmanager
async def devtools(port: int) -> AsyncIterator[DevTools]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            yield DevTools(ws)
