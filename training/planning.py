"""Build a Planner from the configuration: the prior it falls back on, and the engine."""

from __future__ import annotations

from pathlib import Path

from planner.engines import create_engine
from planner.planner import Planner
from planner.prior import SequencePrior, packaged_prior
from training.cholect50 import Annotations
from training.config import AppConfig
from training.prior_selection import fit_final


def build_prior(
    cfg: AppConfig, annotations: Annotations | None = None, path: Path | None = None
) -> SequencePrior:
    """A prior from ``path``, else from the config's ``prior_path``, else fit on the annotations'
    training videos with the configured settings, else the one shipped in the package."""
    chosen = path or cfg.planner.prior_path
    if chosen is not None:
        return SequencePrior.load(chosen)
    if annotations is not None:
        return fit_final(annotations, cfg.planner.prior)
    return packaged_prior()


def build_planner(cfg: AppConfig, prior: SequencePrior) -> Planner:
    engine = create_engine(cfg.planner.engine, prior, cfg.planner.engine_settings)
    return Planner(engine, prior, cfg.planner.settings)
