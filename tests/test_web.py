"""The web app: access (token, CORS), the page's live feed (SSE), signaling, and real WebRTC peers
(aiortc clients over loopback) feeding the service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from planner.memory import NHFMemory
from streamer.config import MqttConfig, ServiceConfig, StreamConfig, WebConfig
from streamer.events import ClipStarted
from streamer.exceptions import StreamerError
from streamer.messages import outgoing
from streamer.payloads import PayloadFactory, Topics
from streamer.service import Service
from streamer.sources.webrtc import WebRTCSource
from streamer.web.app import COOKIE, WebSettings, create_app
from streamer.web.hub import EventHub
from streamer.web.server import WebServer, resolve_token
from streamer.web.signaling import SIGNALING, add_bitrate_fmtp
from tests.streaming_helpers import prior_planner, write_timeline

if TYPE_CHECKING:
    from tests.mqtt_fixtures import Mosquitto, Subscriber

aiortc = pytest.importorskip("aiortc", reason="aiortc not installed (pip install -e '.[stream]')")

TOKEN = "test-token-123"
AV1_ONLY_OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0",
    "a=mid:0", "a=rtcp-mux", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=fingerprint:sha-256 00:11", "a=setup:actpass", "a=rtpmap:96 AV1/90000", "a=sendonly", "",
])  # fmt: skip
ROOM = "or-1"


class ColourTrack(aiortc.VideoStreamTrack):  # type: ignore[misc]
    """A synthetic camera: 320x240 frames whose grey level changes every frame, 30 fps."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> Any:
        import av

        pts, time_base = await self.next_timestamp()
        image = np.full((240, 320, 3), (self.sent * 7) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


@contextlib.asynccontextmanager
async def client_for(
    hub: EventHub, settings: WebSettings, **kwargs: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(hub, settings, **kwargs)
    async with TestClient(TestServer(app)) as client:
        try:
            yield client
        finally:
            hub.close()
            await app[SIGNALING].close()


async def read_events(
    response: aiohttp.ClientResponse, count: int, timeout_s: float = 5.0
) -> list[tuple[str, Any]]:
    """The next ``count`` server-sent events (kind, data), pings skipped."""
    events: list[tuple[str, Any]] = []
    kind = None
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind != "ping":
                events.append((str(kind), json.loads(line[6:])))
    return events


def _payloads(room: str = ROOM) -> dict[str, Any]:
    """A status, a clip start, a recommendation and its refreshed copy, as the pipeline makes them."""
    factory = PayloadFactory(room)
    planner = prior_planner()
    memory = NHFMemory().start_clip("Dissection", 0.0)
    rec = planner.recommend(memory)
    clip = ClipStarted(0, "Dissection", 0.0, 0.5)
    stamps = {"captured": time.time(), "published": time.time()}
    return {
        "status": factory.status("online", "running", engine="prior", model="ngram"),
        "clip": factory.clip(clip, stamps),
        "rec": factory.recommendation(rec, clip, stream_time_s=0.5, stamps=stamps),
        "refresh": factory.recommendation(
            planner.explain(memory, rec), clip, stream_time_s=0.6, stamps=stamps, refresh=True
        ),
    }


def _emit_all(hub: EventHub, payloads: dict[str, Any], room: str = ROOM) -> None:
    topics = Topics(room)
    hub.emit(outgoing(topics.status, payloads["status"], retain=True))
    hub.emit(outgoing(topics.clip, payloads["clip"], retain=False))
    for key in ("rec", "refresh"):  # the pipeline sends each recommendation twice, like to MQTT
        message = outgoing(topics.recommendation, payloads[key], retain=False)
        hub.emit(message)
        hub.emit(message.copy_to(topics.current))


# ---- access ----------------------------------------------------------------------------------
async def test_token_is_required_on_every_endpoint() -> None:
    hub = EventHub([ROOM])
    async with client_for(hub, WebSettings(token=TOKEN)) as client:
        gets = ["/", "/app.js", "/app.css", f"/config?room={ROOM}", "/healthz", f"/events?room={ROOM}"]
        for path in gets:
            assert (await client.get(path)).status == 401, path
            assert (await client.get(path, headers={"Authorization": "Bearer wrong-token"})).status == 401
        offer = {"sdp": "x", "type": "offer"}
        response = await client.post(f"/offer?room={ROOM}", json=offer)
        assert response.status == 401 and "token" in (await response.json())["error"]
        assert response.headers["WWW-Authenticate"] == "Bearer"

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in gets[:-1]:
            assert (await client.get(path, headers=bearer)).status == 200, path
        async with client.get(f"/events?room={ROOM}&token={TOKEN}") as events:
            assert events.status == 200 and events.headers["Content-Type"] == "text/event-stream"
        assert (
            await client.post(f"/offer?room={ROOM}", json=offer, headers=bearer)
        ).status == 404  # past auth

        page = await client.get(f"/?token={TOKEN}")  # the page's cookie carries the token afterwards
        assert page.status == 200 and "<title>" in await page.text()
        assert page.cookies[COOKIE]["httponly"] and page.cookies[COOKIE]["samesite"] == "Strict"
        assert (await client.get("/config")).status == 200


async def test_no_token_on_loopback_and_one_generated_off_loopback() -> None:
    assert resolve_token(WebConfig(bind="127.0.0.1:8080")) == (None, False)
    assert resolve_token(WebConfig(bind="[::1]:8080")) == (None, False)
    assert resolve_token(WebConfig(bind="0.0.0.0:8080", token="configured")) == ("configured", False)
    token, generated = resolve_token(WebConfig(bind="10.1.2.3:8080"))
    assert generated and token is not None and len(token) >= 24

    server = WebServer(WebConfig(bind="0.0.0.0:0"), [ROOM], [])
    with structlog.testing.capture_logs() as logs:
        url = await server.start()
    try:
        port = url.rsplit(":", 1)[1]
        generated_log = next(e for e in logs if e["event"] == "web.token_generated")
        assert f"token={server.token}" in generated_log["page"]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 401
            async with session.get(f"http://127.0.0.1:{port}/healthz?token={server.token}") as response:
                assert response.status == 200 and (await response.json())["rooms"][ROOM]["webrtc"] is False
    finally:
        await server.stop()


async def test_https_with_a_certificate(tmp_path: Path) -> None:
    import shutil
    import ssl

    from tests.mqtt_fixtures import make_test_certificates

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make test certificates")
    make_test_certificates(tmp_path)
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        WebConfig(cert_file=str(tmp_path / "server.crt"))
    cfg = WebConfig(bind="127.0.0.1:0", token=TOKEN, cert_file=str(tmp_path / "server.crt"),
                    key_file=str(tmp_path / "server.key"))  # fmt: skip
    server = WebServer(cfg, [ROOM], [ROOM])
    url = await server.start()
    try:
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/?token={TOKEN}", ssl=trust) as response:
                assert response.status == 200 and response.cookies[COOKIE]["secure"]
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{url}/healthz")  # not trusted without the CA
    finally:
        await server.stop()
    bad = WebConfig(
        bind="127.0.0.1:0", cert_file=str(tmp_path / "ca.key"), key_file=str(tmp_path / "server.key")
    )
    with pytest.raises(StreamerError, match="cannot load"):
        await WebServer(bad, [ROOM], []).start()


async def test_cors_headers_only_for_allowed_origins() -> None:
    allowed = "https://or-dashboard.example"
    hub = EventHub([ROOM])
    settings = WebSettings(token=TOKEN, cors_origins=(allowed,))
    async with client_for(hub, settings) as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        preflight = {"Origin": allowed, "Access-Control-Request-Method": "POST"}
        response = await client.options("/offer", headers=preflight)  # preflights carry no token
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == allowed
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]

        response = await client.get("/config", headers={**bearer, "Origin": allowed})
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == allowed
        response = await client.get("/config", headers={"Origin": allowed})  # the error is readable too
        assert response.status == 401 and response.headers["Access-Control-Allow-Origin"] == allowed

        for headers in (
            {**preflight, "Origin": "https://evil.example"},
            {**bearer, "Origin": "https://evil.example"},
        ):
            method = "OPTIONS" if "Access-Control-Request-Method" in headers else "GET"
            response = await client.request(method, "/config", headers=headers)
            assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
            assert "https://evil.example is not allowed" in (await response.json())["error"]

        same_origin = f"http://{client.server.host}:{client.server.port}"
        response = await client.get("/config", headers={**bearer, "Origin": same_origin})
        assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers


# ---- the page's live feed --------------------------------------------------------------------
async def test_events_deliver_payloads_and_replay_state_to_a_late_page() -> None:
    hub = EventHub([ROOM, "or-2"])
    payloads = _payloads()
    async with client_for(hub, WebSettings()) as client:
        assert (await client.get("/events?room=nowhere")).status == 404
        async with client.get(f"/events?room={ROOM}") as early:
            assert [k for k, _ in await read_events(early, 1)] == ["hello"]
            _emit_all(hub, payloads)
            hub.emit(outgoing(Topics("or-2").status, _payloads("or-2")["status"], retain=True))
            events = await read_events(early, 4)
            assert [k for k, _ in events] == ["status", "clip", "recommendation", "recommendation"]
            assert [d["id"] for _, d in events] == [
                payloads[k]["id"] for k in ("status", "clip", "rec", "refresh")
            ]

            async with client.get(f"/events?room={ROOM}") as late:
                events = await read_events(late, 4)
                assert [k for k, _ in events] == ["hello", "status", "clip", "recommendation"]
                latest = events[3][1]
                assert latest["id"] == payloads["refresh"]["id"] and latest["response"]["next_actions"]
                assert len(hub.clients(ROOM)) == 2
        await asyncio.sleep(0.1)
        assert hub.clients() == []


async def test_a_page_that_falls_behind_loses_its_oldest_events_not_the_pipeline() -> None:
    hub = EventHub([ROOM], client_queue=8)
    stuck = hub.subscribe(ROOM)  # a page that never reads
    status = _payloads()["status"]
    started = time.perf_counter()
    for i in range(1000):
        hub.emit(outgoing(Topics(ROOM).status, {**status, "id": f"id-{i}"}, retain=True))
    assert time.perf_counter() - started < 0.5  # emit never waits for a page
    assert len(stuck.queue) == 8 and stuck.dropped == 1 + 1000 - 8  # hello + 1000
    assert f"id: id-{999}" in stuck.queue[-1] and "id: id-992" in stuck.queue[0]
    batch = await stuck.next_batch(0.1)
    assert batch is not None and len(batch) == 8 and not stuck.queue


# ---- signaling ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not valid JSON"),
        ({"type": "offer"}, 'request body must be JSON {"sdp"'),
        ({"sdp": "v=0\r\n", "type": "answer"}, "type must be 'offer'"),
        ({"sdp": "hello", "type": "offer"}, "malformed SDP offer: it must start with 'v=0'"),
        ({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}, "no video section"),
        (
            {"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n", "type": "offer"},
            "malformed SDP offer",
        ),
        ({"sdp": AV1_ONLY_OFFER, "type": "offer"}, "no video codec in common with the service"),
    ],
    ids=["not-json", "no-sdp", "answer", "not-sdp", "audio-only", "no-ice", "av1-only"],
)
async def test_offer_rejects_malformed_sdp_with_400(body: Any, message: str) -> None:
    source = WebRTCSource(ROOM)
    async with client_for(EventHub([ROOM]), WebSettings(), sources={ROOM: source}) as client:
        kwargs = {"data": body} if isinstance(body, str) else {"json": body}
        response = await client.post(f"/offer?room={ROOM}", **kwargs)
        assert response.status == 400
        error = (await response.json())["error"]
        assert message in error and "\n" not in error
        assert source.accepting and source.peer is None  # a bad offer never touches the room


def test_answer_sdp_gets_bitrate_hints_for_video_codecs() -> None:
    sdp = "\r\n".join([
        "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100", "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000",
        "a=fmtp:98 apt=97", "a=rtpmap:99 H264/90000", "a=fmtp:99 packetization-mode=1",
        "a=rtpmap:100 opus/48000/2",
    ]) + "\r\n"  # fmt: skip
    out = add_bitrate_fmtp(sdp, start_kbps=2000, min_kbps=1000, max_kbps=4000).split("\r\n")
    hint = "x-google-start-bitrate=2000;x-google-min-bitrate=1000;x-google-max-bitrate=4000"
    assert out[out.index("a=rtpmap:97 VP8/90000") + 1] == f"a=fmtp:97 {hint}"
    assert f"a=fmtp:99 packetization-mode=1;{hint}" in out
    assert "a=fmtp:98 apt=97" in out and not any(line.startswith("a=fmtp:100") for line in out)
    assert (
        add_bitrate_fmtp("\r\n".join(out), start_kbps=1, min_kbps=1, max_kbps=1).count("x-google-start") == 2
    )


# ---- real peers ----------------------------------------------------------------------------
async def _frames(source: WebRTCSource, n: int, timeout_s: float = 15.0) -> list[Any]:
    frames = []
    async with asyncio.timeout(timeout_s):
        while len(frames) < n and (frame := await source.next_frame()) is not None:
            frames.append(frame)
    return frames


@pytest.mark.data
async def test_a_real_clip_sent_by_an_aiortc_peer_arrives_as_frames(clips_dir: Path) -> None:
    from streamer.benchmarks.webrtc_client import ClipTrack, publish

    server = WebServer(WebConfig(bind="127.0.0.1:0", token=TOKEN), [ROOM], [ROOM], frame_size=224)
    source = server.source_for(ROOM)
    url = await server.start()
    await source.start()
    lags: list[float] = []

    async def probe() -> None:  # how late a 10 ms sleep wakes up: the event loop's responsiveness
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    track = ClipTrack(sorted(clips_dir.glob("*.mp4"))[0])
    pc = await publish(url, ROOM, track, token=TOKEN)
    prober = asyncio.create_task(probe())
    try:
        frames = await _frames(source, 100)
    finally:
        prober.cancel()
        await pc.close()
        await server.stop()
        await source.stop()
    assert all(f.image.shape == (224, 224, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].pts_s == 0.0 and all(b.pts_s > a.pts_s for a, b in itertools.pairwise(frames))
    assert abs((frames[-1].pts_s - frames[0].pts_s) / (len(frames) - 1) - 0.04) < 0.01  # the clip's 25 fps
    assert all(f.captured_at is not None and f.captured_at <= f.decoded_at for f in frames)
    assert source.received >= 100 and source.stats.failed is None  # a peer leaving never ends the stream
    lags.sort()
    assert lags[int(len(lags) * 0.99)] < 0.05, (
        f"event loop p99 lag {lags[int(len(lags) * 0.99)] * 1000:.1f} ms"
    )


async def test_a_second_peer_replaces_the_first_and_the_stream_goes_on() -> None:
    from streamer.benchmarks.webrtc_client import publish

    server = WebServer(WebConfig(bind="127.0.0.1:0"), [ROOM], [ROOM])
    source = server.source_for(ROOM)
    url = await server.start()
    await source.start()
    first = second = None
    try:
        first = await publish(url, ROOM, ColourTrack())
        before = await _frames(source, 15)
        first_peer = source.peer
        second = await publish(url, ROOM, ColourTrack())
        await first.close()
        await asyncio.sleep(0.5)
        after = await _frames(source, 15)
        assert source.stats.failed is None and source.peers_seen == 2
        assert server.app[SIGNALING].peers[ROOM][0] == source.peer != first_peer
        assert after[0].pts_s > before[-1].pts_s  # stream time goes on across the replacement
        await second.close()  # the current peer leaves: the room waits for a new one, stalled
        async with asyncio.timeout(5):
            while source.health != "stalled":
                await asyncio.sleep(0.05)
        assert "peer disconnected" in (source.health_reason or "") and source.accepting
    finally:
        for pc in (first, second):
            if pc is not None:
                await pc.close()
        await server.stop()
        await source.stop()


async def test_a_peer_that_leaves_stalls_its_room_until_a_new_peer_while_another_room_streams_on(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_subscriber: type[Subscriber]
) -> None:
    from streamer.benchmarks.webrtc_client import publish

    rows = [(0.0, "Tissue Retraction"), (5.0, "Dissection"), (10.0, "Coagulation")]
    cfg = ServiceConfig(
        streams=(StreamConfig(room="or-a", source="webrtc"), StreamConfig(room="or-b", source="webrtc")),
        recognizer=f"timeline:{write_timeline(tmp_path / 't.csv', rows)}",
        mqtt=MqttConfig(broker=mosquitto.url("service")),
        web=WebConfig(bind="127.0.0.1:0"),
    )
    sub = await mqtt_subscriber(mosquitto.settings("monitor"), ["llm-sap/v1/+/status"]).start()
    stop = asyncio.Event()
    service = Service(cfg, planner_factory=prior_planner)
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    peers = []
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.web is not None and service.web.url is not None
        a, b = service.web.source_for("or-a"), service.web.source_for("or-b")
        peers = [await publish(service.web.url, room, ColourTrack()) for room in ("or-a", "or-b")]
        async with asyncio.timeout(10):
            while min(a.stats.decoded, b.stats.decoded) < 20:
                await asyncio.sleep(0.05)
        await peers[0].close()

        def or_a(stream: str) -> Any:
            def seen(ms: list[Any]) -> bool:
                return any(
                    m.topic == "llm-sap/v1/or-a/status" and json.loads(m.payload)["stream"] == stream
                    for m in ms
                )

            return seen

        assert await sub.wait_for(or_a("stalled"), 5)
        decoded = b.stats.decoded
        await asyncio.sleep(1.0)
        assert b.stats.decoded >= decoded + 15 and b.stats.failed is None  # the other room goes on
        assert not task.done() and service.runs[1].pipeline.state.stream == "running"
        sub.messages.clear()
        peers.append(await publish(service.web.url, "or-a", ColourTrack()))  # a new peer: recovered
        assert await sub.wait_for(or_a("running"), 10)
        decoded = a.stats.decoded
        await asyncio.sleep(1.0)
        assert a.stats.decoded >= decoded + 15 and a.recoveries == 1
    finally:
        for pc in peers:
            await pc.close()
        stop.set()
        states = await asyncio.wait_for(task, 15)
        await sub.stop()
    assert states[0].stream == "ended" and states[1].stream == "ended"


async def test_the_page_monitors_a_room_whose_video_is_not_webrtc(tmp_path: Path) -> None:
    from streamer.sources.synthetic import SyntheticSource

    rows = [(0.0, "Tissue Retraction"), (4.0, "Dissection"), (8.0, "Coagulation")]
    cfg = ServiceConfig(
        streams=(StreamConfig(room="or-file", source="synthetic"),),
        recognizer=f"timeline:{write_timeline(tmp_path / 't.csv', rows)}",
        recognizer_rate_hz=5.0,
        web=WebConfig(enabled=True, bind="127.0.0.1:0"),
    )
    source = SyntheticSource(rows, duration_s=12.0, fps=10, size=(32, 32), realtime=True, speed=4.0)
    service = Service(cfg, planner_factory=prior_planner, source_factory=lambda stream, c: source)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    try:
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.web is not None
        base = service.web.url
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/config?room=or-file") as response:
                config = await response.json()
            assert config["webrtc"] is False and config["rooms"] == [{"room": "or-file", "webrtc": False}]
            async with session.post(f"{base}/offer?room=or-file", json={"type": "offer"}) as response:
                assert response.status == 404 and "takes no WebRTC video" in (await response.json())["error"]
            async with session.get(f"{base}/events?room=or-file") as events:
                seen: list[tuple[str, Any]] = []
                while not any(k == "status" and d["stream"] == "ended" for k, d in seen):
                    seen += await read_events(events, 1, timeout_s=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    recs = [d for k, d in seen if k == "recommendation" and not d["refresh"]]
    assert [r["current_action"] for r in recs] == [a for _, a in rows]
    assert [d["clip"]["action"] for k, d in seen if k == "clip" and d["event"] == "started"] == [
        a for _, a in rows
    ]


def test_a_webrtc_stream_needs_the_web_server(tmp_path: Path) -> None:
    cfg = ServiceConfig(
        streams=(StreamConfig(room=ROOM, source="webrtc"),),
        recognizer=f"timeline:{write_timeline(tmp_path / 't.csv', [(0.0, 'Dissection')])}",
        web=WebConfig(enabled=False),
    )
    with pytest.raises(StreamerError, match=r"source webrtc needs service\.web\.enabled"):
        Service(cfg, planner_factory=prior_planner)


def test_serve_webrtc_command_binds_requires_the_token_and_stops_on_sigterm(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    from tests.mqtt_fixtures import free_port

    port = free_port()
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Dissection")])
    cmd = [sys.executable, "-m", "training.cli", "serve", "--source", "webrtc", "--room", "or-7",
           "--bind", f"127.0.0.1:{port}", "--token", TOKEN, "--broker", mosquitto.url("service"),
           "--recognizer", f"timeline:{timeline}", "--log-format", "json"]  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = None
        deadline = time.monotonic() + 30
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                health = _get(f"http://127.0.0.1:{port}/healthz", TOKEN)
            time.sleep(0.1)
        assert health is not None, log_path.read_text()[-2000:]
        room = {
            "pages": 0,
            "webrtc": True,
            "peer": None,
            "received": 0,
            "decoded": 0,
            "dropped": 0,
            "failed": None,
        }
        assert health == (200, {"status": "ok", "rooms": {"or-7": room}})
        assert _get(f"http://127.0.0.1:{port}/healthz", None)[0] == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert TOKEN not in log_path.read_text()  # the configured token never reaches the logs


def _get(url: str, token: str | None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
