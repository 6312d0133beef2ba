"""Build a Planner from the whole configuration, fitting the prior on annotations when asked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from planner.factory import build_planner as _build_planner
from planner.factory import load_prior
from planner.planner import Planner
from planner.prior import SequencePrior
from training.cholect50 import Annotations
from training.config import AppConfig
from training.prior_selection import fit_final


def build_prior(
    cfg: AppConfig,
    annotations: Annotations | None = None,
    path: Path | None = None,
    train_videos: Sequence[str] | None = None,
) -> SequencePrior:
    """A prior from ``path``, else from the config's ``prior_path``, else fit on the annotations'
    training videos (the paper's unless given) with the configured settings, else the one shipped
    in the package."""
    if path is None and cfg.planner.prior_path is None and annotations is not None:
        return fit_final(annotations, cfg.planner.prior, train_videos)
    return load_prior(cfg.planner, path)


def build_planner(cfg: AppConfig, prior: SequencePrior) -> Planner:
    return _build_planner(cfg.planner, prior)
