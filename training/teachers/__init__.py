"""Distillation teachers: one contract, one module per teacher, chosen by a spec and imported lazily.

Specs: ``reference`` (no model: ground truth + the prior, rationales from the knowledge base),
``openai:URL`` (any OpenAI-compatible chat endpoint), ``transformers:PATH`` (a local model).

A teacher's identity (``describe_teacher``) is known without building it, so the response cache
can be consulted first: a fully cached run never loads a model or opens a connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from planner.prior import SequencePrior
from planner.prompts import Message
from planner.registry import PluginRegistry
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


#: name -> module; each module has ``describe(arg, ctx) -> str``, ``create(arg, ctx) -> Teacher``
#: and declares ``SEES_GROUND_TRUTH``: whether its answer depends on the sample's ground truth,
#: not only on the prompt (the cache key then includes the target, so two samples with the same
#: prompt never share an answer).
TEACHERS = PluginRegistry(
    "teacher",
    {
        "reference": "training.teachers.reference",
        "openai": "training.teachers.openai_teacher",
        "transformers": "training.teachers.transformers_teacher",
    },
    error=TeacherError,
)


def sees_ground_truth(spec: str) -> bool:
    module, _ = TEACHERS.resolve(spec)
    return bool(module.SEES_GROUND_TRUTH)


def describe_teacher(spec: str, ctx: TeacherContext) -> str:
    """The teacher's model identity, without building it (no model load, no network)."""
    module, arg = TEACHERS.resolve(spec)
    model: str = module.describe(arg, ctx)
    return model


def create_teacher(spec: str, ctx: TeacherContext) -> Teacher:
    module, arg = TEACHERS.resolve(spec)
    teacher: Teacher = module.create(arg, ctx)
    return teacher
