"""The planner's section of the configuration tree, and the one base every section derives from.

The tree is composed at the top (``training.config.AppConfig``) from each package's own part:
``planner.config.PlannerConfig`` here, ``streamer.config.ServiceConfig`` beside the service, the
training recipes beside the trainers. Each default is stated once, in the part that owns it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from planner.engines.base import EngineSettings
from planner.memory import DEFAULT_MAX_DISTANT, DEFAULT_MAX_KEYFRAMES
from planner.partner import check_partner_spec
from planner.planner import PlannerSettings
from planner.prior import PriorSettings


class Section(BaseModel):
    """The base of every configuration section: unknown keys are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryConfig(Section):
    """The NHFM's bounds, offline and live (the live pipeline reads these, nothing else)."""

    max_distant: int = Field(DEFAULT_MAX_DISTANT, ge=1, le=4096)
    max_keyframes: int = Field(DEFAULT_MAX_KEYFRAMES, ge=1, le=64)
    # live keyframes of the current clip: downscaled once to keyframe_size² (the VL model's input;
    # 224 → 64 visual tokens for Qwen2-VL), at most one per keyframe_interval_s of stream time
    keyframe_size: int = Field(224, ge=28, le=1024)
    keyframe_interval_s: float = Field(1.0, gt=0, le=60)


class PlannerConfig(Section):
    # NAME or NAME:ARG, see planner.engines. The learned sequence planner: it won the CV on the
    # training videos by the rule fixed before (training/sequence_selection.py); README has the table
    engine: str = "learned"
    # the label planner a model engine is fused with and falls back to (planner.partner):
    # prior (the n-gram; select-fusion's weights were chosen with it), learned or learned:FILE
    partner: str = "prior"
    prior_path: Path | None = None  # a fitted prior JSON; default: the one shipped in the package
    prior: PriorSettings = PriorSettings()  # used when fitting a prior from annotations
    settings: PlannerSettings = PlannerSettings()
    engine_settings: EngineSettings = EngineSettings()
    memory: MemoryConfig = MemoryConfig()
    # live: re-plan the running clip when what the engine reads of it changed (new keyframes, a new
    # caption), at most this often in stream seconds; 0 = plan at clip start only
    refresh_s: float = Field(5.0, ge=0, le=3600)

    @field_validator("partner")
    @classmethod
    def _partner(cls, value: str) -> str:
        return check_partner_spec(value)


class LoggingConfig(Section):
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
