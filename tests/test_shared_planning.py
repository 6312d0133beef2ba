"""One engine per process: a shared worker batches rooms' rankings, under each room's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from planner.actions import ACTIONS
from planner.engine_worker import EngineWorker
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings
from planner.prior import packaged_prior
from training.cli import main

if TYPE_CHECKING:
    from tests.qwen_fixtures import TinyQwen

pytest_plugins = ["tests.qwen_fixtures"]


class GatedBatchEngine:
    """Blocks its first ranking until released; records the size of every batch it scores."""

    name = "gated"
    model = "gated-test"
    instant = False
    needs_model = True
    batch_rank = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.batches: list[int] = []

    def _scores(self, memory: NHFMemory) -> dict[str, float]:
        return {a: -float(i) for i, a in enumerate(ACTIONS)}

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        return self.rank_batch([memory])[0]

    def rank_batch(self, memories: Sequence[NHFMemory]) -> list[dict[str, float]]:
        self.started.set()
        self.release.wait(5)
        self.batches.append(len(memories))
        return [self._scores(m) for m in memories]

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        yield ""

    def close(self) -> None:
        pass


def _memory(label: str = "Dissection") -> NHFMemory:
    return NHFMemory.from_history([], label)


def test_requests_waiting_behind_a_forward_pass_go_in_one_batch() -> None:
    engine = GatedBatchEngine()
    worker = EngineWorker(engine)
    try:
        first = worker.submit(_memory())
        assert engine.started.wait(5)
        waiting = [worker.submit(_memory("Coagulation")) for _ in range(5)]
        engine.release.set()
        assert first.result(5) and all(f.result(5) for f in waiting)
        assert engine.batches == [1, 5]
    finally:
        worker.close()


def test_a_request_whose_caller_gave_up_is_never_scored() -> None:
    engine = GatedBatchEngine()
    worker = EngineWorker(engine)
    try:
        worker.submit(_memory())
        assert engine.started.wait(5)
        given_up = worker.submit(_memory())
        kept = worker.submit(_memory())
        assert given_up.cancel()
        engine.release.set()
        kept.result(5)
        assert engine.batches == [1, 1]
    finally:
        worker.close()


def test_rooms_sharing_an_engine_keep_their_own_deadline_and_fallback() -> None:
    engine = GatedBatchEngine()  # never released: every ranking misses its deadline
    worker = EngineWorker(engine)
    settings = PlannerSettings(deadline_s=0.2)
    rooms = [Planner(engine, packaged_prior(), settings, worker=worker) for _ in range(2)]
    try:
        t0 = time.perf_counter()
        recs = [p.recommend(_memory()) for p in rooms]
        assert time.perf_counter() - t0 < 2.0
        assert all(r.degraded and "deadline" in (r.degraded_reason or "") for r in recs)
        for p in rooms:
            p.close()  # a room's planner leaves the shared engine and worker open
        assert worker._thread.is_alive()
    finally:
        engine.release.set()
        worker.close()
    assert not worker._thread.is_alive()


def test_transformers_batched_ranking_equals_one_by_one(tiny_qwen: TinyQwen) -> None:
    from planner.engines import create_engine

    engine = create_engine(f"transformers:{tiny_qwen.text}", packaged_prior())
    try:
        memories = [
            NHFMemory.from_history([], "Dissection"),
            NHFMemory.from_history(["Dissection", "Coagulation", "Dissection"], "Tissue Retraction"),
            NHFMemory.from_history(["Dissection"], "Vessel Clipping"),
        ]
        batched = engine.rank_batch(memories)  # type: ignore[attr-defined]
        for memory, scores in zip(memories, batched, strict=True):
            single = engine.rank(memory)
            assert max(abs(single[a] - scores[a]) for a in ACTIONS) < 1e-4
    finally:
        engine.close()


def test_a_two_room_service_loads_the_model_once(
    tiny_qwen: TinyQwen, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timeline = tmp_path / "t.csv"
    timeline.write_text("start_s,action\n0,Dissection\n4,Coagulation\n8,Dissection\n")
    config = tmp_path / "rooms.toml"
    config.write_text(
        f"""[service]
realtime = false
recognizer = "timeline:{timeline}"
[[service.streams]]
room = "or-1"
source = "synthetic"
[[service.streams]]
room = "or-2"
source = "synthetic"
"""
    )
    planner = f"transformers:{tiny_qwen.text}"
    argv = ["serve", "--config", str(config), "--planner", planner, "--exit-when-done"]
    assert main([*argv, "--set", "service.refresh_text=false"]) == 0
    err = capsys.readouterr().err
    assert err.count("engine.model_loaded") == 1, err


def test_an_instant_engine_shared_by_rooms_outlives_any_one_room() -> None:
    """One room ending closes its Planner, never the process's engine (the learned engine refuses
    to rank once closed)."""
    from planner.config import PlannerConfig
    from planner.factory import SharedPlanning

    with SharedPlanning(PlannerConfig(engine="learned"), packaged_prior()) as planning:
        first, second = planning.planner(), planning.planner()
        first.recommend(_memory())
        first.close()  # its room ended
        rec = second.recommend(_memory())
        assert not rec.degraded and rec.engine == "learned"
