"""A real browser streams a real clip to the service and shows the assistant's output.

Debian's chromium, headless, with a fake camera fed from a y4m made from a real clip (Chromium's
own test pattern when the data is absent), opens the page with ``?autostart=1``; the page sends
the camera over WebRTC to ``llm-sap serve --source webrtc`` (the Service, in-process), whose
timeline oracle switches action every 5 s, with the real mosquitto as broker. The test drives
the same browser over the Chrome DevTools Protocol (aiohttp websockets, no extra packages:
``streamer/benchmarks/headless_chromium.py``) to read the page and take a screenshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from planner.memory import NHFMemory
from streamer.benchmarks.headless_chromium import DevTools, chromium, devtools, find_chromium, make_y4m
from streamer.config import MqttConfig, ServiceConfig, StreamConfig, WebConfig
from streamer.events import ClipStarted
from streamer.messages import outgoing
from streamer.payloads import PayloadFactory, Topics
from streamer.service import Service
from streamer.web.server import WebServer
from tests.streaming_helpers import prior_planner, write_timeline

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto, Received, Subscriber

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="Debian chromium not installed (apt-get install chromium)"
)

TOKEN = "browser-test-token"
ROOM = "or-web"
CYCLE = ["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection", "Coagulation", "Aspiration"]
TIMELINE = [(5.0 * i, CYCLE[i % len(CYCLE)]) for i in range(24)]  # a switch every 5 s, 2 minutes
SCREENSHOT_COPY = Path("/tmp/llm-sap-page.png")
WINDOW = (1280, 800)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def _payloads(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]


# what the page shows, read from its DOM
PAGE_STATE = """JSON.stringify({
  text: document.body.innerText,
  now: document.getElementById('now-action').textContent,
  bars: [...document.querySelectorAll('#bars li .label')].map(e => e.textContent),
  why: document.getElementById('why').textContent,
  banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
  link: document.getElementById('pill-link').textContent,
  clips: document.querySelectorAll('#strip .seg').length,
})"""


@pytest.mark.timeout(90)
async def test_browser_camera_to_page_through_the_assistant(
    request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    try:  # a real clip as the camera; without the data, Chromium's own test pattern
        clip = sorted(request.getfixturevalue("clips_dir").glob("*.mp4"))[0]
        fake_camera: Path | None = make_y4m(clip, tmp_path / "camera.y4m")
    except pytest.skip.Exception:
        fake_camera = None
    cfg = ServiceConfig(
        streams=(StreamConfig(room=ROOM, source="webrtc"),),
        recognizer=f"timeline:{write_timeline(tmp_path / 'timeline.csv', TIMELINE)}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=mosquitto.url("service")),
        web=WebConfig(bind="127.0.0.1:0", token=TOKEN),
    )
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), [f"llm-sap/v1/{ROOM}/#"]).start()
    stop = asyncio.Event()
    service = Service(cfg, planner_factory=prior_planner)
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.web is not None and service.web.url is not None
        source = service.web.source_for(ROOM)
        url = f"{service.web.url}/?room={ROOM}&token={TOKEN}&autostart=1"
        with chromium(url, tmp_path / "profile", fake_camera, window=WINDOW) as port:
            started = time.monotonic()
            await wait_until(lambda: source.stats.decoded >= 50, 20, "frames from the browser")

            def second_clip_advised(ms: list[Received]) -> bool:
                recs = _payloads(ms, "/recommendation")
                return any(r["clip"]["index"] >= 1 and r["refresh"] for r in recs)

            assert await sub.wait_for(second_clip_advised, 20), "no recommendation for the second clip"
            async with devtools(port) as dev:
                deadline = time.monotonic() + 10
                while True:  # the page follows MQTT within a moment; compare with the latest state
                    page = json.loads(await dev.evaluate(PAGE_STATE))
                    clips = [p for p in _payloads(sub.messages, "/clip") if p["event"] == "started"]
                    recs = _payloads(sub.messages, "/recommendation")
                    latest_clip, latest_rec = clips[-1]["clip"], recs[-1]
                    shown = page["now"] == latest_clip["action"] and page["bars"][:1] == [
                        latest_rec["ranked"][0]["action"]
                    ]
                    if (shown and page["why"]) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                png = await dev.screenshot(*WINDOW)
                streamed_s = time.monotonic() - started
                stop.set()  # the service goes away: the page must say so
                await asyncio.wait_for(task, 15)
                offline = await _banner_when(dev, lambda b: "OFFLINE" in b, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await sub.stop()
    (tmp_path / "page.png").write_bytes(png)
    with contextlib.suppress(OSError):
        SCREENSHOT_COPY.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    # frames arrived at the camera's rate, newest-wins, and clips were cut from them
    stats = source.stats
    fps = source.received / streamed_s
    assert fps > 12, f"only {fps:.1f} frames/s arrived ({source.received} in {streamed_s:.1f} s)"
    assert stats.failed is None and stats.dropped <= 0.1 * source.received
    clips = [p for p in _payloads(sub.messages, "/clip") if p["event"] == "started"]
    assert [c["clip"]["action"] for c in clips[:2]] == [a for _, a in TIMELINE[:2]]
    assert service.runs[0].pipeline.state.frames_processed > 10

    # the page showed the current action, the five ranked actions and the rationale
    assert shown, (
        f"page: {page['now']!r} / {page['bars'][:1]}; MQTT: {latest_clip} / {latest_rec['ranked'][0]}"
    )
    assert len(page["bars"]) == 5 and set(page["bars"]) == {r["action"] for r in latest_rec["ranked"]}
    assert page["why"].startswith("Why "), page["why"]
    assert page["banner"] is None, page["banner"]
    assert page["link"] == "Video link: connected" and page["clips"] >= 2
    for needle in ("NOW", "NEXT ACTION", latest_clip["action"], "Advisory only"):
        assert needle in page["text"], needle
    assert offline.startswith("OFFLINE"), offline


BANNER = "(b => b === null ? null : b.hidden ? '' : b.textContent)(document.getElementById('banner'))"


async def _banner_when(dev: DevTools, predicate: Callable[[str], bool], timeout_s: float) -> str:
    """The page's banner text once ``predicate`` holds for it (AssertionError on timeout)."""
    banner = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        banner = await dev.evaluate(BANNER)
        if banner is None:  # the page is not loaded yet
            await asyncio.sleep(0.1)
            continue
        if predicate(banner):
            return str(banner)
        await asyncio.sleep(0.2)
    raise AssertionError(f"banner still {banner!r} after {timeout_s} s")


async def test_the_page_says_degraded_stale_and_offline(tmp_path: Path) -> None:
    """A monitor-only page fed by hand: each state of the assistant gets its banner."""
    room = "or-mon"
    server = WebServer(WebConfig(bind="127.0.0.1:0"), [room], [])
    url = await server.start()
    factory = PayloadFactory(room)
    planner = prior_planner()
    memory = NHFMemory().start_clip("Dissection", 0.0)
    clip = ClipStarted(0, "Dissection", 0.0, 0.5)
    rec = planner.recommend(memory)
    topics = Topics(room)

    def emit(topic: str, payload: dict[str, Any]) -> None:
        server.hub.emit(outgoing(topic, payload, retain=True))

    emit(topics.status, factory.status("online", "running"))
    emit(topics.clip, factory.clip(clip, {"segmented": time.time()}))
    degraded = dataclasses.replace(rec, degraded=True, degraded_reason="engine timed out after 2.0 s")
    emit(topics.recommendation, factory.recommendation(degraded, clip, stream_time_s=0.5, stamps={}))
    try:
        with chromium(f"{url}/?room={room}", tmp_path / "profile") as port:
            async with devtools(port) as dev:
                banner = await _banner_when(dev, lambda b: b.startswith("DEGRADED"), 15)
                assert "engine timed out after 2.0 s" in banner
                controls_hidden = await dev.evaluate("document.getElementById('controls').hidden")
                assert controls_hidden is True  # monitor only: no camera buttons
                assert await dev.evaluate("document.getElementById('now-action').textContent") == "Dissection"

                expired = PayloadFactory(room, recommendation_ttl_s=0.5).recommendation(
                    rec, clip, stream_time_s=0.5, stamps={}
                )
                emit(topics.recommendation, expired)
                await _banner_when(dev, lambda b: b.startswith("STALE"), 5)

                emit(topics.status, factory.status("offline", "ended", "shutdown"))
                banner = await _banner_when(dev, lambda b: b.startswith("OFFLINE"), 5)
                assert "shutdown" in banner

                emit(topics.status, factory.status("online", "running"))
                emit(topics.recommendation, factory.recommendation(rec, clip, stream_time_s=0.6, stamps={}))
                await _banner_when(dev, lambda b: b == "", 5)  # all well: no banner
                await server.stop()  # the connection goes: the page notices within its ping timeout
                await _banner_when(dev, lambda b: "no connection" in b, 12)
    finally:
        await server.stop()


@pytest.mark.timeout(120)
async def test_the_browser_peer_drops_and_reconnects_and_the_room_recovers(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    """Close the page's peer: the room is ``stalled`` (status topic and page banner); share again:
    the new offer is taken, frames and recommendations resume, the room is ``running`` again."""
    cfg = ServiceConfig(
        streams=(StreamConfig(room=ROOM, source="webrtc"),),
        recognizer=f"timeline:{write_timeline(tmp_path / 'timeline.csv', TIMELINE)}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=mosquitto.url("service")),
        web=WebConfig(bind="127.0.0.1:0", token=TOKEN),
    )
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), [f"llm-sap/v1/{ROOM}/#"]).start()
    stop = asyncio.Event()
    service = Service(cfg, planner_factory=prior_planner)
    task = asyncio.create_task(service.run(stop, exit_when_done=False))

    def statuses() -> list[str]:
        return [p["stream"] for p in _payloads(sub.messages, "/status")]

    try:
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.web is not None and service.web.url is not None
        source = service.web.source_for(ROOM)
        url = f"{service.web.url}/?room={ROOM}&token={TOKEN}&autostart=1"
        with chromium(url, tmp_path / "profile", None, window=WINDOW) as port:
            await wait_until(lambda: source.stats.decoded >= 30, 30, "frames from the browser")
            async with devtools(port) as dev:
                await dev.evaluate("stopSharing()")  # the peer goes away (like a pulled cable)
                await wait_until(lambda: "stalled" in statuses(), 15, "a stalled status")
                stalled_banner = await _banner_when(dev, lambda b: b.startswith("VIDEO STALLED"), 10)
                decoded, recs = source.stats.decoded, len(_payloads(sub.messages, "/recommendation"))
                await dev.evaluate("share('camera')")  # the same page shares again: a new offer
                await wait_until(lambda: source.stats.decoded >= decoded + 30, 30, "frames after reconnect")
                await wait_until(lambda: statuses()[-1:] == ["running"], 10, "running again")
                await wait_until(
                    lambda: len(_payloads(sub.messages, "/recommendation")) > recs, 30, "a new recommendation"
                )
                await _banner_when(dev, lambda b: not b.startswith("VIDEO STALLED"), 10)
    finally:
        stop.set()
        states = await asyncio.wait_for(task, 15)
        await sub.stop()
    assert "peer disconnected" in stalled_banner
    assert source.recoveries >= 1 and source.peers_seen >= 2 and source.stats.failed is None
    assert states[0].stream == "ended"
