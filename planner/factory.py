"""Build the planning parts from the planner's configuration: the prior, the engine, a Planner.

One engine per process: commands build the engine once and give every room its own ``Planner``
(its own deadline, fallback and failure count) over that shared engine.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from planner.config import PlannerConfig
from planner.engine_worker import EngineWorker
from planner.engines import create_engine
from planner.engines.base import PlanningEngine
from planner.partner import build_partner
from planner.planner import Planner
from planner.prior import SequencePrior, packaged_prior

log = structlog.get_logger(__name__)


def load_prior(cfg: PlannerConfig, path: Path | None = None) -> SequencePrior:
    """The prior at ``path``, else at the config's ``prior_path``, else the one shipped."""
    chosen = path or cfg.prior_path
    return SequencePrior.load(chosen) if chosen is not None else packaged_prior()


def build_engine(cfg: PlannerConfig, prior: SequencePrior) -> PlanningEngine:
    return create_engine(cfg.engine, prior, cfg.engine_settings)


def build_planner(cfg: PlannerConfig, prior: SequencePrior, engine: PlanningEngine | None = None) -> Planner:
    """A Planner over ``engine`` (shared between rooms), or over a new engine when none is given."""
    engine = engine or build_engine(cfg, prior)
    return Planner(engine, prior, cfg.settings, partner=build_partner(cfg.partner, prior))


class SharedPlanning:
    """One engine for the whole process (loaded once), and a ``Planner`` per room over it.

    Model engines get one ``EngineWorker`` that every room's requests go through, batched into
    one forward pass where the engine allows; each room keeps its own deadline and fallback."""

    def __init__(self, cfg: PlannerConfig, prior: SequencePrior) -> None:
        self.cfg = cfg
        self.prior = prior
        self.engine = build_engine(cfg, prior)
        self.partner = build_partner(cfg.partner, prior)  # read once, shared by the rooms' planners
        self.worker = None if self.engine.instant else EngineWorker(self.engine)
        log.debug("planner.engine_ready", engine=self.engine.name, model=self.engine.model, shared=True)

    def planner(self) -> Planner:
        return Planner(
            self.engine, self.prior, self.cfg.settings, worker=self.worker, partner=self.partner, shared=True
        )

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.engine.close()

    def __enter__(self) -> SharedPlanning:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
