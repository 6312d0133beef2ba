"""The OR page for a file / RTSP room, in a real browser at 1280 px: the stream's own state instead of
camera pills and an empty video box, the latency visible beside a long model name, clip numbers as
the progress line counts them, and no favicon request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from planner.memory import NHFMemory
from streamer.benchmarks.headless_chromium import chromium, devtools, find_chromium
from streamer.config import WebConfig
from streamer.events import ClipStarted
from streamer.messages import outgoing
from streamer.payloads import PayloadFactory, Topics
from streamer.web.server import WebServer
from tests.streaming_helpers import prior_planner

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="Debian chromium not installed (apt-get install chromium)"
)

WINDOW = (1280, 800)
LONG_MODEL = "/models/Qwen2.5-VL-72B-Instruct-AWQ+lora:/srv/adapters/grpo-cholect50-2026-11-30-long-run"
SCREENSHOT_COPY = Path("/tmp/llm-sap-page-monitor.png")

PAGE = """JSON.stringify((() => {
  if (!document.getElementById('latency')) return null;  // not loaded yet
  const box = (id) => { const r = document.getElementById(id).getBoundingClientRect();
                        return {left: r.left, right: r.right, width: r.width, height: r.height}; };
  const shown = (id) => document.getElementById(id).offsetParent !== null;
  return {
    latency: document.getElementById('latency').textContent, latencyBox: box('latency'),
    engineName: document.getElementById('engine-name').textContent,
    camera: shown('pill-camera'), link: shown('pill-link'), preview: shown('preview-wrap'),
    source: shown('pill-source') ? document.getElementById('pill-source').textContent : null,
    stream: shown('stream-state') ? document.getElementById('stream-state').innerText : null,
    nowMeta: document.getElementById('now-meta').textContent,
    progress: document.getElementById('progress').textContent,
    recMeta: document.getElementById('rec-meta').textContent,
    nextIn: shown('next-in') ? document.getElementById('next-in').textContent : null,
    icon: (document.querySelector('link[rel=icon]') || {}).href || null,
    width: document.documentElement.clientWidth,
  };
})())"""


async def test_a_file_room_shows_its_stream_latency_and_matching_clip_numbers(tmp_path: Path) -> None:
    room = "or-file"
    server = WebServer(WebConfig(bind="127.0.0.1:0"), [room], [])
    requested: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        requested.append(request.path)
        return await handler(request)

    server.app.middlewares.append(record)  # every path the browser asks for
    url = await server.start()
    factory = PayloadFactory(room)
    memory = NHFMemory()
    for i, action in enumerate(["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection"]):
        memory = memory.start_clip(action, 10.0 * i)
    clip = ClipStarted(3, "Dissection", 30.0, 30.5)
    planner = prior_planner()
    rec = dataclasses.replace(planner.explain(memory, planner.recommend(memory)), model=LONG_MODEL)
    now = time.time()
    stamps = {"captured": now - 0.0421, "planned": now - 0.001, "published": now}
    topics = Topics(room)
    rec_payload = factory.recommendation(rec, clip, stream_time_s=31.0, stamps=stamps)
    for topic, payload in (
        (topics.status, factory.status("online", "running", engine=rec.engine, model=LONG_MODEL)),
        (topics.clip, factory.clip(clip, {"segmented": now})),
        (topics.recommendation, rec_payload),
    ):
        server.hub.emit(outgoing(topic, payload, retain=True))
    try:
        with chromium(f"{url}/?room={room}", tmp_path / "profile", window=WINDOW) as port:
            async with devtools(port) as dev:
                page: dict[str, Any] = {}
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    raw = await dev.evaluate(PAGE)
                    page = json.loads(raw) or {}
                    if page.get("latency") and page.get("progress"):
                        break
                    await asyncio.sleep(0.2)
                png = await dev.screenshot(*WINDOW)
                page = json.loads(await dev.evaluate(PAGE))
    finally:
        await server.stop()
    (tmp_path / "page.png").write_bytes(png)
    SCREENSHOT_COPY.write_bytes(png)

    # latency: shown in full, inside the window, beside a model name too long for the bar
    assert page["latency"] == "latency 42 ms", page
    lat = page["latencyBox"]
    assert lat["width"] > 40 and lat["right"] <= page["width"], page
    assert page["engineName"].endswith(LONG_MODEL)
    # a file room: the stream's own state, no camera pills, no black video box
    assert not page["camera"] and not page["link"] and not page["preview"], page
    assert page["source"] == "Video: playing"
    assert page["stream"] is not None and "Video playing" in page["stream"]
    assert "stream time 00:31 · clip 4" in page["stream"]
    # clip numbers: the progress line says "4 clips so far", the page says clip 4 (index 3)
    assert page["progress"].startswith("Progress: 4 clips so far"), page["progress"]
    assert page["nowMeta"].startswith("clip 4 "), page["nowMeta"]
    assert page["recMeta"].startswith("during clip 4 "), page["recMeta"]
    # when the next action is expected: the payload's range, counted down since it was published
    low, high = rec_payload["next_in_s"]["low"], rec_payload["next_in_s"]["high"]
    shown_range = re.fullmatch(r"Next action expected in (\d+)–(\d+) s", page["nextIn"] or "")
    assert shown_range, page["nextIn"]
    assert low - 20 <= int(shown_range[1]) <= low + 1 and high - 20 <= int(shown_range[2]) <= high + 1
    # the icon is inline: the browser never asks the server for /favicon.ico (no 404 in its console)
    assert page["icon"] and page["icon"].startswith("data:image/svg+xml")
    assert "/favicon.ico" not in requested
