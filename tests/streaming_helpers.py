"""Builders shared by the streaming tests: a pipeline over a synthetic procedure, fake engines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from planner.actions import ACTIONS
from planner.engines import create_engine
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings
from planner.prior import packaged_prior

PROCEDURE = [
    (0.0, "Tissue Retraction"),
    (6.0, "Dissection"),
    (12.0, "Vessel Clipping"),
    (18.0, "Dissection"),
    (24.0, "Coagulation"),
    (30.0, "Aspiration"),
]


def write_timeline(path: Path, rows: list[tuple[float, str]] = PROCEDURE) -> Path:
    path.write_text("start_s,action\n" + "".join(f"{s},{a}\n" for s, a in rows))
    return path


def prior_planner() -> Planner:
    prior = packaged_prior()
    return Planner(create_engine("prior", prior), prior)


class SlowEngine:
    """A model-engine stand-in: every rank blocks its worker thread for ``delay_s``."""

    name = "slow"
    model = "slow-test-model"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self._closed = threading.Event()

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        self.calls += 1
        self._closed.wait(self.delay_s)
        return {a: (0.0 if a == "Aspiration" else -3.0) for a in ACTIONS}

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        time.sleep(self.delay_s)
        yield '{"progress_assessment": "p", "safety_considerations": "s", "next_actions": ["Aspiration"]}'

    def close(self) -> None:
        self._closed.set()


def slow_planner(delay_s: float, deadline_s: float = 30.0) -> Planner:
    return Planner(
        SlowEngine(delay_s), packaged_prior(), PlannerSettings(deadline_s=deadline_s, fusion_weight=0.0)
    )
