"""The caption worker: one thread, latest request per room wins, cached per clip, failures contained."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from streamer.captions import Caption, CaptionRequest, CaptionWorker
from streamer.keyframes import Keyframe


def _frames(*times: float) -> tuple[Keyframe, ...]:
    return tuple(Keyframe(t, np.full((8, 8, 3), int(t) % 256, dtype=np.uint8)) for t in times)


class _Describer:
    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, images: Sequence[np.ndarray]) -> str:
        self.gate.wait(5)
        self.threads.add(threading.current_thread().name)
        values = [int(img[0, 0, 0]) for img in images]
        self.calls.append(values)
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError("model failed")
        time.sleep(self.delay_s)
        return f"  frames {' '.join(map(str, values))}\n"


def _collect() -> tuple[list[Caption], threading.Event, object]:
    got: list[Caption] = []
    event = threading.Event()

    def on_done(c: Caption) -> None:
        got.append(c)
        event.set()

    return got, event, on_done


def test_captions_newest_frames_in_its_own_thread_and_measures_latency() -> None:
    describe = _Describer(delay_s=0.02)
    worker = CaptionWorker(describe, frames=2, model="tiny-vl")
    got, done, on_done = _collect()
    try:
        worker.submit(CaptionRequest("or-1", 3, 12.0, _frames(12, 15, 19)), on_done)  # type: ignore[arg-type]
        assert done.wait(5)
    finally:
        worker.close()
    (caption,) = got
    assert describe.calls == [[15, 19]] and describe.threads == {"captioner"}
    assert caption.text == "frames 15 19"  # whitespace normalised
    assert caption.frames_pts_s == (15.0, 19.0) and caption.clip_index == 3
    assert caption.generate_ms >= 20 and caption.latency_ms >= caption.generate_ms
    summary = worker.summary()
    assert summary["captioned"] == 1 and summary["latency_ms"]["caption"]["n"] == 1  # type: ignore[index]


def test_latest_request_per_room_wins_and_rooms_take_turns() -> None:
    describe = _Describer()
    describe.gate.clear()  # hold the worker on the first request
    worker = CaptionWorker(describe)
    got: list[Caption] = []
    lock = threading.Lock()

    def on_done(c: Caption) -> None:
        with lock:
            got.append(c)

    try:
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(1)), on_done)
        deadline = time.monotonic() + 5
        while worker._pending and time.monotonic() < deadline:  # the worker takes the first request
            time.sleep(0.01)
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(1, 2)), on_done)
        worker.submit(CaptionRequest("b", 0, 0.0, _frames(7)), on_done)
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(1, 2, 3)), on_done)  # replaces a's frame 2
        describe.gate.set()
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.close()
    assert [c.text for c in got] == ["frames 1", "frames 7", "frames 3"]
    assert worker.stats["replaced"] == 1


def test_same_frames_of_the_same_clip_come_from_the_cache() -> None:
    describe = _Describer()
    worker = CaptionWorker(describe)
    got, done, on_done = _collect()
    try:
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(4)), on_done)  # type: ignore[arg-type]
        assert done.wait(5)
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(4)), on_done)  # type: ignore[arg-type]
    finally:
        worker.close()
    assert len(describe.calls) == 1 and len(got) == 2
    assert got[1].cached and got[1].text == got[0].text
    assert worker.stats["cache_hits"] == 1


def test_a_failing_model_or_callback_does_not_stop_the_worker() -> None:
    describe = _Describer(fail_on=5)
    worker = CaptionWorker(describe)
    got, done, on_done = _collect()

    def broken(_c: Caption) -> None:
        raise RuntimeError("room gone")

    try:
        worker.submit(CaptionRequest("a", 0, 0.0, _frames(5)), on_done)  # type: ignore[arg-type]
        worker.submit(CaptionRequest("b", 0, 0.0, _frames(6)), broken)
        worker.submit(CaptionRequest("c", 0, 0.0, _frames(8)), on_done)  # type: ignore[arg-type]
        assert done.wait(5)
    finally:
        worker.close()
    assert [c.room for c in got] == ["c"]
    assert worker.stats["failed"] == 1 and worker.stats["captioned"] == 2


def test_close_joins_the_thread_and_ignores_later_requests() -> None:
    worker = CaptionWorker(_Describer())
    worker.close()
    assert not worker._thread.is_alive()
    worker.submit(CaptionRequest("a", 0, 0.0, _frames(1)), lambda c: None)
    assert worker.stats["requested"] == 0
