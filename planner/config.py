"""The planner's section of the configuration tree, and the one base every section derives from.

The tree is composed at the top (``training.config.AppConfig``) from each package's own part:
``planner.config.PlannerConfig`` here, ``streamer.config.ServiceConfig`` beside the service, the
training recipes beside the trainers. Each default is stated once, in the part that owns it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.engines.base import EngineSettings
from planner.memory import DEFAULT_MAX_DISTANT, DEFAULT_MAX_KEYFRAMES
from planner.planner import PlannerSettings
from planner.prior import PriorSettings


class Section(BaseModel):
    """The base of every configuration section: unknown keys are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryConfig(Section):
    max_distant: int = Field(DEFAULT_MAX_DISTANT, ge=1, le=4096)
    max_keyframes: int = Field(DEFAULT_MAX_KEYFRAMES, ge=1, le=64)


class PlannerConfig(Section):
    engine: str = "prior"  # NAME or NAME:ARG, see planner.engines
    prior_path: Path | None = None  # a fitted prior JSON; default: the one shipped in the package
    prior: PriorSettings = PriorSettings()  # used when fitting a prior from annotations
    settings: PlannerSettings = PlannerSettings()
    engine_settings: EngineSettings = EngineSettings()
    memory: MemoryConfig = MemoryConfig()


class LoggingConfig(Section):
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
