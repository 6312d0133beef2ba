"""Errors raised by the planning core. Each names the bad value in its message."""

from __future__ import annotations


class PlannerError(Exception):
    """Base class of the planner package's errors."""


class UnknownActionError(PlannerError, ValueError):
    """A string that should be one of the five action labels is not."""

    def __init__(self, value: str, where: str = "") -> None:
        at = f"{where}: " if where else ""
        super().__init__(f"{at}{value!r} is not an action label")
        self.value = value


class PriorFileError(PlannerError):
    """A sequence-prior JSON file is missing or malformed."""


class EngineError(PlannerError):
    """A planning engine failed to rank or generate."""


class UnknownEngineError(PlannerError, ValueError):
    """The configured engine name is not one this build knows."""


class LearnedModelError(PlannerError):
    """A learned-planner model file is missing, malformed, or from another format version."""
