"""Frame sources on real laparoscopic clips: replay, live pacing and drops, stop, bad inputs."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from planner.actions import ACTIONS, ASPIRATION, COAGULATION, DISSECTION
from streamer.exceptions import SourceError, TimelineError
from streamer.frames import Frame
from streamer.sources import FrameSource, open_source
from streamer.sources.synthetic import ACTION_COLOURS, SyntheticSource
from streamer.sources.video import VideoSource, probe

CLIP_FRAMES = 800
CLIP_FPS = 25.0


@pytest.fixture
def clip(clips_dir: Path) -> Path:
    return sorted(clips_dir.glob("*.mp4"))[0]


@pytest.fixture
def faststart_clip(clip: Path, tmp_path: Path) -> Path:
    """The clip remuxed with its index ('moov') first, as streaming-friendly MP4s are."""
    out_path = tmp_path / "faststart.mp4"
    with av.open(str(clip)) as src, av.open(str(out_path), "w", options={"movflags": "faststart"}) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    return out_path


async def drain(source: FrameSource, *, budget_s: float = 10.0) -> list[Frame]:
    """Start, take every frame until the end, stop; all within ``budget_s``."""
    frames: list[Frame] = []
    async with asyncio.timeout(budget_s):
        await source.start()
        try:
            while (frame := await source.next_frame()) is not None:
                frames.append(frame)
        finally:
            await source.stop()
    return frames


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything."""
    server = socket.create_server(("127.0.0.1", 0))
    yield int(server.getsockname()[1])
    server.close()


@pytest.fixture
def stalling_http_server(faststart_clip: Path) -> Iterator[str]:
    """Serves the first third of a clip over HTTP, then goes silent (a stalled network feed)."""
    data = faststart_clip.read_bytes()
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            header = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(data)}\r\n\r\n"
            conn.sendall(header.encode() + data[: len(data) // 3])
            done.wait(10)

    thread = threading.Thread(target=serve, name="stalling-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/clip.mp4"
    done.set()
    server.close()
    thread.join(2)


# ---- real clips -------------------------------------------------------------------------------
def test_probe_reads_the_clip_header(clip: Path) -> None:
    info = probe(str(clip))
    assert (info.width, info.height, info.frames) == (854, 480, CLIP_FRAMES)
    assert info.fps == pytest.approx(CLIP_FPS)
    assert info.duration_s == pytest.approx(CLIP_FRAMES / CLIP_FPS)


async def test_lossless_replay_delivers_every_frame_in_order(clip: Path) -> None:
    source = open_source(str(clip), realtime=False)
    frames = await drain(source)

    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    pts = np.array([f.pts_s for f in frames])
    assert pts[0] == 0.0
    assert np.all(np.diff(pts) > 0)
    assert pts[-1] == pytest.approx((CLIP_FRAMES - 1) / CLIP_FPS)
    assert frames[0].image.shape == (224, 224, 3)
    assert frames[0].image.dtype == np.uint8
    assert source.stats.decoded == source.stats.delivered == CLIP_FRAMES
    assert source.stats.dropped == 0
    assert source.stats.failed is None
    assert source.stats.ended


async def test_output_size_none_keeps_the_original_size(clip: Path) -> None:
    source = VideoSource(str(clip), output_size=None)
    await source.start()
    frame = await source.next_frame()
    await source.stop()
    assert frame is not None
    assert frame.image.shape == (480, 854, 3)


async def test_decoding_runs_in_its_own_named_thread(clip: Path) -> None:
    source = VideoSource(str(clip), lossless=False, name="cam1")
    await source.start()
    assert source.thread is not None
    assert source.thread.name == "decode-cam1"
    assert source.thread is not threading.current_thread()
    # The loop only sleeps here; decoding goes on without it.
    await asyncio.sleep(0.3)
    assert source.stats.decoded > 10
    assert source.stats.delivered == 0
    await source.stop()
    assert not source.thread.is_alive()


async def test_realtime_slow_consumer_gets_the_newest_frame_and_drops_are_counted(clip: Path) -> None:
    source = open_source(str(clip), realtime=True)  # live: newest frame wins
    await source.start()
    ages, lags = [], []
    first_seen: float | None = None
    while (frame := await source.next_frame()) is not None:
        now = time.monotonic()
        first_seen = now if first_seen is None else first_seen
        ages.append(time.time() - (frame.captured_at or frame.decoded_at))
        lags.append((now - first_seen) - frame.pts_s)
        if now - first_seen > 1.0:
            break
        await asyncio.sleep(0.15)  # a consumer slower than the 40 ms frame period
    stats = source.stats
    in_slot = stats.decoded - stats.delivered - stats.dropped
    await source.stop()

    assert stats.dropped >= 10
    assert in_slot in (0, 1)
    assert max(ages) < 0.1  # what it got was never older than about one frame
    assert max(abs(lag) for lag in lags) < 0.1  # stream time keeps up with the wall clock


async def test_realtime_replay_takes_the_clip_time(clip: Path) -> None:
    source = open_source(str(clip), realtime=True, lossless=True)
    await source.start()
    started = time.monotonic()
    frame = await source.next_frame()
    while frame is not None and frame.pts_s < 1.0:
        frame = await source.next_frame()
    elapsed = time.monotonic() - started
    await source.stop()
    assert frame is not None
    assert 0.9 <= elapsed <= 1.3
    assert source.stats.dropped == 0


@pytest.mark.parametrize("realtime", [False, True], ids=["replay", "realtime"])
async def test_stop_mid_stream_joins_the_thread_promptly(clip: Path, realtime: bool) -> None:
    source = VideoSource(str(clip), realtime=realtime)
    await source.start()
    for _ in range(5):
        assert await source.next_frame() is not None
    started = time.monotonic()
    await source.stop()
    assert time.monotonic() - started < 0.5
    assert source.thread is not None
    assert not source.thread.is_alive()
    assert source.stats.failed is None
    assert source.stats.decoded < CLIP_FRAMES
    leftovers = 0
    while await source.next_frame() is not None:  # at most the frame left in the slot
        leftovers += 1
    assert leftovers <= 1


# ---- bad inputs -------------------------------------------------------------------------------
async def open_fails(spec: str, budget_s: float = 3.0, **kwargs: Any) -> str:
    source = open_source(spec, realtime=False, **kwargs)
    started = time.monotonic()
    with pytest.raises(SourceError) as error:
        async with asyncio.timeout(budget_s):
            await source.start()
    assert time.monotonic() - started < budget_s
    message = str(error.value)
    assert "\n" not in message
    return message


async def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    assert await open_fails(str(missing)) == f"cannot open video {missing}: file not found"


async def test_text_file_named_mp4_is_a_source_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n" * 20)
    message = await open_fails(str(fake))
    assert str(fake) in message
    assert "invalid data" in message


async def test_truncated_mp4_without_its_index_fails_at_start(clip: Path, tmp_path: Path) -> None:
    # These clips keep the 'moov' index at the end: cut at 60 %, FFmpeg cannot open them at all.
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    message = await open_fails(str(cut))
    assert str(cut) in message
    assert "'moov' index" in message


async def test_truncated_faststart_mp4_delivers_what_it_has_then_fails(
    faststart_clip: Path, tmp_path: Path
) -> None:
    data = faststart_clip.read_bytes()
    cut = tmp_path / "cut-faststart.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    source = open_source(str(cut), realtime=False)
    frames = await drain(source, budget_s=5)
    assert 300 < len(frames) < CLIP_FRAMES
    assert source.stats.delivered == len(frames)
    assert source.stats.failed is not None
    assert str(cut) in source.stats.failed


async def test_corrupt_data_mid_file_ends_the_stream_with_a_reason(clip: Path, tmp_path: Path) -> None:
    data = bytearray(clip.read_bytes())
    start, end = int(len(data) * 0.4), int(len(data) * 0.6)
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    source = open_source(str(corrupt), realtime=False)
    frames = await drain(source, budget_s=5)
    assert 100 < len(frames) < CLIP_FRAMES  # the frames before the damage arrive
    assert source.stats.failed is not None
    assert f"decoding {corrupt} failed after {len(frames)} frames" in source.stats.failed


async def test_unreachable_rtsp_is_a_source_error() -> None:
    url = f"rtsp://127.0.0.1:{closed_port()}/x"
    assert await open_fails(url) == f"cannot open video {url}: connection refused"


async def test_silent_rtsp_server_times_out_at_start(silent_server: int) -> None:
    url = f"rtsp://127.0.0.1:{silent_server}/x"
    message = await open_fails(url, open_timeout_s=1.0)
    assert message == f"cannot open video {url}: no answer within 1 s"


async def test_password_never_appears_in_errors() -> None:
    message = await open_fails(f"rtsp://admin:hunter2@127.0.0.1:{closed_port()}/x")
    assert "hunter2" not in message
    assert "admin:***@127.0.0.1" in message


async def test_stalled_network_feed_fails_after_the_read_timeout(stalling_http_server: str) -> None:
    source = open_source(stalling_http_server, realtime=False, open_timeout_s=1.0)
    frames = await drain(source, budget_s=5)
    assert len(frames) > 50
    assert source.stats.failed is not None
    assert source.stats.failed.endswith("no data for 1 s (feed stalled)")


# ---- synthetic source and the factory ---------------------------------------------------------
def nearest_action(image: np.ndarray) -> str:
    mean = image.reshape(-1, 3).mean(axis=0)
    return min(ACTIONS, key=lambda a: float(np.linalg.norm(mean - np.array(ACTION_COLOURS[a]))))


async def test_synthetic_frames_follow_the_timeline() -> None:
    timeline = [(0.0, DISSECTION), (1.0, COAGULATION), (2.0, ASPIRATION)]
    source = SyntheticSource(timeline, duration_s=3.0, fps=10.0, size=(64, 48))
    frames = await drain(source)
    assert [f.pts_s for f in frames] == pytest.approx([i / 10.0 for i in range(30)])
    assert frames[0].image.shape == (48, 64, 3)
    assert [nearest_action(f.image) for f in frames] == [source.action_at(f.pts_s) for f in frames]
    assert {nearest_action(f.image) for f in frames} == {DISSECTION, COAGULATION, ASPIRATION}
    assert source.thread is not None
    assert source.thread.name == "decode-synthetic"


async def test_synthetic_realtime_is_paced() -> None:
    source = SyntheticSource(duration_s=0.5, fps=20.0, realtime=True)
    started = time.monotonic()
    frames = await drain(source)
    assert 0.4 <= time.monotonic() - started <= 0.8
    assert frames[-1].index == 9


@pytest.mark.parametrize(
    "timeline",
    [[], [(1.0, DISSECTION)], [(0.0, DISSECTION), (0.0, COAGULATION)], [(0.0, "Suturing")]],
    ids=["empty", "late-start", "not-increasing", "unknown-action"],
)
def test_synthetic_rejects_bad_timelines(timeline: list[tuple[float, str]]) -> None:
    with pytest.raises(TimelineError):
        SyntheticSource(timeline)


def test_open_source_picks_the_implementation() -> None:
    assert isinstance(open_source("synthetic", realtime=True), SyntheticSource)
    assert isinstance(open_source("rtsp://camera.local/stream", realtime=True), VideoSource)
    video = open_source("/data/clip.mp4", realtime=False, output_size=None, thread_type="FRAME")
    assert isinstance(video, VideoSource)
    assert (video.lossless, video.output_size, video.thread_type, video.name) == (True, None, "FRAME", "clip")
    with pytest.raises(SourceError):
        open_source("  ", realtime=False)


# ---- decode benchmark -------------------------------------------------------------------------
def test_decode_bench_writes_a_table_and_json(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.benchmarks import decode as decode_bench

    out = tmp_path / "bench.json"
    assert decode_bench.main([str(clip), "--size", "112x112", "--json", str(out)]) == 0
    assert clip.name in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["clips"]
    assert row["frames"] == CLIP_FRAMES
    assert row["decode_fps"] > 0 and row["decode_resize_fps"] > 0 and row["source_fps"] > 0


def test_decode_bench_bad_clip_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.benchmarks import decode as decode_bench

    assert decode_bench.main([str(tmp_path / "missing.mp4")]) == 2
    assert "file not found" in capsys.readouterr().err
