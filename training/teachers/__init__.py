"""Distillation teachers: one contract, one module per teacher, chosen by a spec and imported lazily.

Specs: ``reference`` (no model: ground truth + the prior, rationales from the knowledge base),
``openai:URL`` (any OpenAI-compatible chat endpoint), ``transformers:PATH`` (a local model).

A teacher's identity (``describe_teacher``) is known without building it, so the response cache
can be consulted first: a fully cached run never loads a model or opens a connection.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from planner.prior import SequencePrior
from planner.prompts import Message
from training.exceptions import TrainingError
from training.recipes import DistillConfig
from training.samples import TrainingSample


class TeacherError(TrainingError):
    """A teacher cannot be built or failed to answer."""


@dataclass(frozen=True)
class TeacherRequest:
    """One answer asked of a teacher: the ``index``-th of k for this sample's prompt."""

    sample: TrainingSample
    temperature: float
    max_tokens: int
    index: int = 0

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.sample.messages


@dataclass(frozen=True)
class TeacherContext:
    prior: SequencePrior  # fitted on the training videos only
    settings: DistillConfig


@runtime_checkable
class Teacher(Protocol):
    spec: str  # as given: "reference", "openai:http://host/v1", ...
    model: str  # what writes the answers (part of the cache key and of the provenance)

    def respond(self, request: TeacherRequest) -> str:
        """The structured response text for one request (may block; may raise TeacherError)."""
        ...

    def close(self) -> None: ...


# name -> module; each module has describe(arg, ctx) -> str and create(arg, ctx) -> Teacher
_REGISTRY: dict[str, str] = {
    "reference": "training.teachers.reference",
    "openai": "training.teachers.openai_teacher",
    "transformers": "training.teachers.transformers_teacher",
}


#: Teachers whose answer depends on the sample's ground truth, not only on the prompt: their cache
#: key includes the target, so two samples with the same prompt never share an answer.
GROUND_TRUTH_TEACHERS = frozenset({"reference"})


def sees_ground_truth(spec: str) -> bool:
    return spec.partition(":")[0] in GROUND_TRUTH_TEACHERS


def _module(spec: str) -> tuple[object, str]:
    name, _, arg = spec.partition(":")
    target = _REGISTRY.get(name)
    if target is None:
        raise TeacherError(f"teacher {spec!r} is not known (known: reference, openai:URL, transformers:PATH)")
    return importlib.import_module(target), arg


def describe_teacher(spec: str, ctx: TeacherContext) -> str:
    """The teacher's model identity, without building it (no model load, no network)."""
    module, arg = _module(spec)
    model: str = module.describe(arg, ctx)  # type: ignore[attr-defined]
    return model


def create_teacher(spec: str, ctx: TeacherContext) -> Teacher:
    module, arg = _module(spec)
    teacher: Teacher = module.create(arg, ctx)  # type: ignore[attr-defined]
    return teacher
