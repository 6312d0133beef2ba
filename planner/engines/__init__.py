"""Planning engines: one contract (``base.PlanningEngine``), one module per implementation.

Engines are chosen by a spec string, ``NAME`` or ``NAME:ARG`` (``prior``,
``transformers:/models/qwen``, ...), and their modules are imported only when selected, so
heavy packages (torch, tensorrt_llm) load only where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from planner.engines.base import EngineSettings
from planner.exceptions import UnknownEngineError
from planner.registry import PluginRegistry

if TYPE_CHECKING:
    from planner.engines.base import PlanningEngine
    from planner.prior import SequencePrior

#: name -> "module:factory"; the factory takes (arg, prior, settings) and returns a PlanningEngine.
ENGINES = PluginRegistry(
    "planner engine",
    {
        "prior": "planner.engines.prior_engine:create",
        "learned": "planner.engines.learned_engine:create",
        "transformers": "planner.engines.transformers_engine:create",
        "openai": "planner.engines.openai_engine:create",
        "trtllm": "planner.engines.trtllm_engine:create",
    },
    error=UnknownEngineError,
)


def available_engines() -> tuple[str, ...]:
    return ENGINES.names()


def create_engine(spec: str, prior: SequencePrior, settings: EngineSettings | None = None) -> PlanningEngine:
    """Build the engine named by ``spec`` (``NAME`` or ``NAME:ARG``)."""
    factory: Callable[[str, SequencePrior, EngineSettings], PlanningEngine]
    factory, arg = ENGINES.resolve(spec)
    return factory(arg, prior, settings or EngineSettings())
