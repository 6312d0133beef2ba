"""WebRTC ingest benchmark: ``python -m streamer.benchmarks.webrtc [--seconds 30] [--browser] [--json OUT]``.

Everything runs on this machine, so every stamp is on one clock. What is measured:

1. ingest: a Python aiortc peer (``streamer.benchmarks.webrtc_client.ClipTrack``) plays a real clip (854x480,
   25 fps) as a live camera and stamps the wall time each frame leaves its track (``sent``); the
   room's ``WebRTCSource`` receives it and a consumer takes every frame. Frames sent / received /
   dropped; sent → arrival (VP8 encode, RTP over loopback, jitter buffer, VP8 decode; arrival is
   the payloads' ``captured`` stamp) and arrival → RGB frame ready, p50/p99; event-loop lag.
2. service: the same peer into ``llm-sap serve --source webrtc`` (the Service in-process, prior
   planner, timeline oracle switching every 5 s, embedded broker) and an MQTT subscriber: sent →
   MQTT delivery of each clip-start recommendation, from the frame that confirmed the clip (found
   by its stream time; the segmenter's 0.5 s confirmation hold comes before that frame and is not
   included), and arrival → publish from the payloads' stamps.
3. ``--browser``: headless Chromium's fake camera (the clip as 640x360 y4m) through the page:
   frames Chromium sent (its getStats) vs frames the service received, drops, receive rate, and
   arrival → MQTT delivery. Chromium does not expose its capture time to the service, so the
   browser path is measured from arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from planner.logs import configure_logging
from streamer.benchmarks.pipeline import CLIPS, _prior_planner
from streamer.config import MqttConfig, ServiceConfig, StreamConfig, WebConfig
from streamer.latency import percentiles

FPS = 25.0
ROOM = "bench"
ACTIONS = ["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection", "Coagulation", "Aspiration"]


def _clip() -> Path:
    clips = sorted(CLIPS.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"webrtc_bench: no clips in {CLIPS} (set LLM_SAP_DATA)")
    return clips[0]


def _timeline(path: Path, seconds: float) -> Path:
    rows = [f"{5.0 * i:.1f},{ACTIONS[i % len(ACTIONS)]}" for i in range(int(seconds // 5) + 2)]
    path.write_text("start_s,action\n" + "\n".join(rows) + "\n")
    return path


async def _loop_lag(out: list[float]) -> None:
    """How late a 10 ms sleep wakes up (ms): the event loop's responsiveness."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        out.append((time.perf_counter() - t - 0.01) * 1000)


async def bench_ingest(seconds: float) -> dict[str, Any]:
    from streamer.benchmarks.webrtc_client import ClipTrack, publish
    from streamer.web.server import WebServer

    server = WebServer(WebConfig(bind="127.0.0.1:0"), [ROOM], [ROOM])
    source = server.source_for(ROOM)
    url = await server.start()
    await source.start()
    track = ClipTrack(_clip(), fps=FPS)
    transport: list[float] = []
    convert: list[float] = []
    lags: list[float] = []
    pc = await publish(url, ROOM, track)
    lag_task = asyncio.create_task(_loop_lag(lags))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                frame = await asyncio.wait_for(source.next_frame(), 1.0)
                if frame is None or frame.captured_at is None:
                    break
                index = round(frame.pts_s * FPS)
                if index < len(track.sent_at):
                    transport.append((frame.captured_at - track.sent_at[index]) * 1000)
                convert.append((frame.decoded_at - frame.captured_at) * 1000)
    finally:
        lag_task.cancel()
        sent = len(track.sent_at)
        await pc.close()
        await server.stop()
        await source.stop()
    return {
        "frames_sent": sent,
        "frames_received": source.received,
        "frames_dropped": source.stats.dropped,
        "frame_size": source.frame_size,
        "sent_to_arrival_ms": percentiles(transport),
        "arrival_to_rgb_ms": percentiles(convert),
        "event_loop_lag_ms": percentiles(lags),
    }


@contextlib.asynccontextmanager
async def _service(
    seconds: float, tmp: Path
) -> AsyncIterator[tuple[Any, list[tuple[float, dict[str, Any]]]]]:
    """The service with one webrtc room and a subscriber: yields (service, [(received_at, payload)])."""
    import aiomqtt

    from streamer.service import Service

    cfg = ServiceConfig(
        streams=(StreamConfig(room=ROOM, source="webrtc"),),
        recognizer=f"timeline:{_timeline(tmp / 'timeline.csv', seconds)}",
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(protocol="3.1.1"),
        web=WebConfig(bind="127.0.0.1:0"),
    )
    service = Service(cfg, planner_factory=_prior_planner)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    received: list[tuple[float, dict[str, Any]]] = []
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        port = int(str(service.broker_url).rsplit(":", 1)[1])
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as sub:
            await sub.subscribe(f"llm-sap/v1/{ROOM}/#", qos=1)

            async def collect() -> None:
                async for m in sub.messages:
                    received.append((time.time(), json.loads(bytes(m.payload))))

            collector = asyncio.create_task(collect())
            try:
                yield service, received
                await asyncio.sleep(0.5)
            finally:
                collector.cancel()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _recommendation_latency(
    received: list[tuple[float, dict[str, Any]]], sent_time: Callable[[float], float | None] | None
) -> dict[str, Any]:
    """Per clip-start recommendation: arrival → publish (stamps), arrival → delivery, and, when the
    sender's times are known, sent → delivery of the frame that confirmed the clip."""
    starts = [p for _, p in received if p["type"] == "clip" and p["event"] == "started"]
    detected = {p["clip"]["index"]: p["detected_s"] for p in starts}
    publish, delivery, end_to_end = [], [], []
    for at, p in received:
        if p["type"] != "recommendation" or p["refresh"]:
            continue
        stamps = p["stamps"]
        publish.append((stamps["published"] - stamps["captured"]) * 1000)
        delivery.append((at - stamps["captured"]) * 1000)
        index = p["clip"]["index"]
        sent = sent_time(detected[index]) if sent_time is not None and index in detected else None
        if sent is not None:
            end_to_end.append((at - sent) * 1000)
    out = {"arrival_to_publish_ms": percentiles(publish), "arrival_to_mqtt_ms": percentiles(delivery)}
    if sent_time is not None:
        out["sent_to_mqtt_ms"] = percentiles(end_to_end)
    return out


def _unique_recs(received: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    """Each payload once (the retained ``/current`` copy repeats the ``/recommendation`` one)."""
    seen: set[str] = set()
    out = []
    for at, p in received:
        if p["id"] not in seen:
            seen.add(p["id"])
            out.append((at, p))
    return out


def _count_recommendations(recs: list[tuple[float, dict[str, Any]]]) -> int:
    return sum(1 for _, p in recs if p["type"] == "recommendation" and not p["refresh"])


async def bench_service(seconds: float) -> dict[str, Any]:
    from streamer.benchmarks.webrtc_client import ClipTrack, publish

    with tempfile.TemporaryDirectory() as tmp:
        async with _service(seconds, Path(tmp)) as (service, received):
            track = ClipTrack(_clip(), fps=FPS)
            pc = await publish(service.web.url, ROOM, track)
            await asyncio.sleep(seconds)
            await pc.close()
            source = service.web.source_for(ROOM)

    def sent_time(stream_s: float) -> float | None:
        index = round(stream_s * FPS)
        return track.sent_at[index] if index < len(track.sent_at) else None

    recs = _unique_recs(received)
    return {
        "frames_sent": len(track.sent_at),
        "frames_received": source.received,
        "frames_dropped": source.stats.dropped,
        "frame_size": source.frame_size,
        "recommendations": _count_recommendations(recs),
        **_recommendation_latency(recs, sent_time),
    }


SENDER_STATS = """(async () => { let out = null; (await state.pc.getStats()).forEach((s) => {
  if (s.type === 'outbound-rtp' && s.kind === 'video') out = {sent: s.framesSent,
    fps: s.framesPerSecond, width: s.frameWidth, height: s.frameHeight,
    limitation: s.qualityLimitationReason}; }); return out; })()"""


async def bench_browser(seconds: float) -> dict[str, Any]:
    from streamer.benchmarks.headless_chromium import chromium, devtools, make_y4m

    with tempfile.TemporaryDirectory() as tmp:
        fake = make_y4m(_clip(), Path(tmp) / "camera.y4m")
        async with _service(seconds, Path(tmp)) as (service, received):
            source = service.web.source_for(ROOM)
            url = f"{service.web.url}/?room={ROOM}&autostart=1"
            with chromium(url, Path(tmp) / "profile", fake) as port:
                async with devtools(port) as dev:
                    await asyncio.sleep(3.0)  # connect and ramp up, then measure
                    start = (time.monotonic(), source.received, (await dev.evaluate(SENDER_STATS)) or {})
                    await asyncio.sleep(max(seconds - 3.0, 1.0))
                    end_sender = (await dev.evaluate(SENDER_STATS)) or {}
                    elapsed, got = time.monotonic() - start[0], source.received - start[1]
    sent = end_sender.get("sent", 0) - start[2].get("sent", 0)
    recs = _unique_recs(received)
    return {
        "frames_sent": sent,
        "frames_received": got,
        "frames_dropped": source.stats.dropped,
        "receive_fps": round(got / elapsed, 1),
        "sender": end_sender,
        "frame_size": source.frame_size,
        "recommendations": _count_recommendations(recs),
        **_recommendation_latency(recs, None),
    }


ROWS = ("frames_sent", "frames_received", "frames_dropped", "frame_size", "receive_fps", "recommendations",
        "sent_to_arrival_ms", "arrival_to_rgb_ms", "event_loop_lag_ms", "arrival_to_publish_ms",
        "arrival_to_mqtt_ms", "sent_to_mqtt_ms")  # fmt: skip


def _row(name: str, results: dict[str, dict[str, Any]], key: str) -> str:
    cells = []
    for r in results.values():
        v = r.get(key)
        if isinstance(v, dict) and v.get("n"):
            cells.append(f"p50 {v['p50']:.1f} / p99 {v['p99']:.1f} (n={v['n']})")
        elif isinstance(v, dict) and "sent" not in v:
            cells.append("—")
        else:
            cells.append("—" if v is None else str(v))
    return f"{name:<24}" + "".join(f"{c:>32}" for c in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.benchmarks.webrtc", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="streaming time per run (default 30)")
    parser.add_argument(
        "--browser", action="store_true", help="also stream from headless Chromium's fake camera"
    )
    parser.add_argument("--json", type=Path, dest="json_out")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    results = {"ingest (python peer)": asyncio.run(bench_ingest(args.seconds)),
               "service (python peer)": asyncio.run(bench_service(args.seconds))}  # fmt: skip
    if args.browser:
        results["service (chromium page)"] = asyncio.run(bench_browser(args.seconds))
    print(f"{'':<24}" + "".join(f"{name:>32}" for name in results))
    for key in ROWS:
        if any(key in r for r in results.values()):
            print(_row(key, results, key))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
