"""One engine, one worker thread, shared by every room's Planner in the process.

Rooms submit ranking requests; the worker takes the first waiting request and every other one
already queued (up to ``max_batch``) and, when the engine declares ``batch_rank``, scores them
in one forward pass (``rank_batch``); otherwise one after the other. Each caller waits on its
own future under its own deadline; a request whose caller gave up is skipped, never scored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import structlog

from planner.engines.base import PlanningEngine
from planner.memory import NHFMemory

log = structlog.get_logger(__name__)

Scores = dict[str, float]


@dataclass
class _Request:
    memory: NHFMemory
    future: Future[Scores]


class EngineWorker:
    """Runs ``engine.rank`` (or ``rank_batch``) in a named thread; ``submit`` never blocks."""

    def __init__(self, engine: PlanningEngine, *, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.engine = engine
        self.max_batch = max_batch if getattr(engine, "batch_rank", False) else 1
        self.batches = 0  # forward passes (or single ranks) run
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{engine.name}", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, memory: NHFMemory) -> Future[Scores]:
        future: Future[Scores] = Future()
        if self._closed:
            future.set_exception(RuntimeError("engine worker is closed"))
        else:
            self._queue.put(_Request(memory, future))
        return future

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (queued requests are cancelled) and join it; the engine is not closed."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    # ---- the worker thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._cancel_waiting()
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if live:
                self._score(live)
            if stop:
                self._cancel_waiting()
                return

    def _score(self, batch: Sequence[_Request]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            if len(batch) > 1:
                results = self.engine.rank_batch([r.memory for r in batch])  # type: ignore[attr-defined]
            else:
                results = [self.engine.rank(batch[0].memory)]
        except Exception as exc:  # handed to every caller, who degrades to the prior and logs it
            for r in batch:
                r.future.set_exception(exc)
            return
        for r, scores in zip(batch, results, strict=True):
            r.future.set_result(scores)

    def _cancel_waiting(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.cancel()
