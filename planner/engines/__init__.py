"""Planning engines: one contract (``base.PlanningEngine``), one module per implementation.

Engines are chosen by a spec string, ``NAME`` or ``NAME:ARG`` (``prior``,
``transformers:/models/qwen``, ...), and their modules are imported only when selected, so
heavy packages (torch, tensorrt_llm) load only where they are used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from planner.engines.base import EngineSettings
from planner.exceptions import UnknownEngineError

if TYPE_CHECKING:
    from planner.engines.base import PlanningEngine
    from planner.prior import SequencePrior

# name -> "module:factory"; the factory takes (arg, prior, settings) and returns a PlanningEngine.
_REGISTRY: dict[str, str] = {
    "prior": "planner.engines.prior:create",
    "transformers": "planner.engines.transformers_engine:create",
    "openai": "planner.engines.openai_engine:create",
    "trtllm": "planner.engines.trtllm_engine:create",
}


def available_engines() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def create_engine(spec: str, prior: SequencePrior, settings: EngineSettings | None = None) -> PlanningEngine:
    """Build the engine named by ``spec`` (``NAME`` or ``NAME:ARG``)."""
    name, _, arg = spec.partition(":")
    target = _REGISTRY.get(name)
    if target is None:
        raise UnknownEngineError(
            f"planner engine {name!r} is not available (known: {', '.join(available_engines())})"
        )
    module_name, _, attr = target.partition(":")
    factory: Callable[[str, SequencePrior, EngineSettings], PlanningEngine] = getattr(
        importlib.import_module(module_name), attr
    )
    return factory(arg, prior, settings or EngineSettings())
