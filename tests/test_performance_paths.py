"""The fast paths of issue 13, driven for real: frames converted only when used, the embedded
broker on its own loop, and one thread hop from the pipeline's loop to a model engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from planner.actions import ACTIONS
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings
from planner.prior import packaged_prior
from streamer import frames as frames_module
from streamer.config import ServiceConfig
from streamer.frames import Frame
from streamer.replay import replay
from tests.streaming_helpers import prior_planner, write_timeline
from tests.test_exit_codes import tiny_video


def _decoded_frame() -> av.VideoFrame:
    image = np.zeros((96, 160, 3), np.uint8)
    image[:, :80] = 200
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def test_a_frame_is_converted_only_when_used_and_once_per_size() -> None:
    frame = Frame(0, 0.0, None, 1.0, video_frame=_decoded_frame(), output_size=(64, 32))
    assert frame.converted == 0
    image = frame.image
    assert image.shape == (32, 64, 3) and frame.converted == 1
    assert frame.image is image  # cached
    small = frame.image_at((16, 16))
    assert small.shape == (16, 16, 3) and frame.converted == 2
    assert frame.image_at((16, 16)) is small
    with pytest.raises(ValueError, match="exactly one"):
        Frame(0, 0.0, None, 1.0)


class _KeyframeReader:
    """A planner engine that reads keyframes (as DirNHFM does) and ranks like the prior."""

    name = "keyframe-reader"
    model = "test"
    instant = True
    reads_near = frozenset({"keyframes"})

    def __init__(self) -> None:
        self._prior = packaged_prior()

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        return self._prior.log_scores(memory.history)

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        yield ""

    def close(self) -> None:
        pass


@pytest.mark.parametrize("reads_keyframes", [False, True], ids=["labels-only", "reads-keyframes"])
async def test_replay_converts_only_the_frames_someone_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads_keyframes: bool
) -> None:
    calls: list[tuple[int, int] | None] = []
    real = frames_module.video_frame_to_rgb

    def counting(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        calls.append(size)
        return real(frame, size)

    monkeypatch.setattr(frames_module, "video_frame_to_rgb", counting)
    video = tiny_video(tmp_path / "v.mp4", seconds=12.0, fps=25)
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Dissection"), (6.0, "Coagulation")])

    def factory() -> Planner:
        prior = packaged_prior()
        return Planner(_KeyframeReader(), prior) if reads_keyframes else prior_planner()

    report = await replay(ServiceConfig(), factory, str(video), str(timeline))
    decoded = report["frames"]["decoded"]
    assert decoded == 300 and report["frames"]["dropped"] == 0
    # the timeline oracle reads no pixels: only keyframes are converted, and only when the planner
    # reads them (each once, at the sampler's size, about one per second of the 12 s video)
    if reads_keyframes:
        assert 0 < len(calls) <= 30, len(calls)
        assert len(set(calls)) == 1 and calls[0] != (32, 32)
        assert max(r["basis"]["keyframes"] for r in report["recommendations"]) > 0
    else:
        assert calls == []
    assert [c["action"] for c in report["clips"]["found"]] == ["Dissection", "Coagulation"]


def test_the_embedded_broker_delivers_while_the_services_loop_is_blocked() -> None:
    """Broker work runs on its own thread: a stuck pipeline loop does not stop delivery."""
    import paho.mqtt.client as paho

    from streamer.mqtt.broker import EmbeddedBroker

    async def scenario() -> tuple[list[bytes], bool]:
        broker = EmbeddedBroker()
        url = await broker.start()
        host, port = url.rsplit("/", 1)[1].split(":")
        got: list[bytes] = []
        done = threading.Event()

        def clients() -> None:
            sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sub")
            pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub")
            subscribed = threading.Event()
            sub.on_subscribe = lambda *a: subscribed.set()
            sub.on_message = lambda c, u, m: (got.append(m.payload), done.set())
            sub.connect(host, int(port))
            sub.loop_start()
            sub.subscribe("t/x", qos=1)
            subscribed.wait(5)
            pub.connect(host, int(port))
            pub.loop_start()
            pub.publish("t/x", b"hello", qos=1)
            done.wait(5)
            for c in (pub, sub):
                c.loop_stop()
                c.disconnect()

        thread = threading.Thread(target=clients)
        thread.start()
        time.sleep(3.0)  # the service's loop is blocked the whole time the clients talk
        delivered_while_blocked = done.is_set()
        thread.join(10)
        names = {t.name for t in threading.enumerate()}
        await broker.stop()
        assert "mqtt-broker" in names
        return got, delivered_while_blocked

    got, while_blocked = asyncio.run(scenario())
    assert got == [b"hello"] and while_blocked
    assert "mqtt-broker" not in {t.name for t in threading.enumerate()}


class _ThreadRecordingEngine:
    name = "recording"
    model = "recording-test"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.threads: list[str] = []
        self._closed = threading.Event()

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        self.threads.append(threading.current_thread().name)
        self._closed.wait(self.delay_s)
        return {a: -float(i) for i, a in enumerate(ACTIONS)}

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        yield ""

    def close(self) -> None:
        self._closed.set()


async def test_a_model_engine_is_reached_in_one_hop_from_the_loop() -> None:
    engine = _ThreadRecordingEngine()
    planner = Planner(engine, packaged_prior())
    try:
        before = {t.name for t in threading.enumerate()}
        rec = await planner.recommend_async(NHFMemory.from_history(["Dissection"], "Coagulation"))
        assert not rec.degraded and rec.ranked
        # the ranking ran on the engine worker's thread, and no other pool thread was started
        assert engine.threads and engine.threads[0].startswith("engine")
        started = {t.name for t in threading.enumerate()} - before
        assert not any(name.startswith("plan") for name in started | before)
    finally:
        planner.close()


async def test_one_hop_keeps_the_deadline_and_degrades_to_the_prior() -> None:
    engine = _ThreadRecordingEngine(delay_s=5.0)
    planner = Planner(engine, packaged_prior(), PlannerSettings(deadline_s=0.2))
    try:
        t0 = time.perf_counter()
        rec = await planner.recommend_async(NHFMemory.from_history(["Dissection"], "Coagulation"))
        assert time.perf_counter() - t0 < 1.5
        assert rec.degraded and "deadline" in (rec.degraded_reason or "")
    finally:
        planner.close()
