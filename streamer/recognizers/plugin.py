"""Your own recognizer, from outside this project: ``plugin:MODULE:FACTORY[:ARG]`` or ``plugin:NAME``.

``MODULE:FACTORY`` names anything importable (a class or a function) that is called as
``FACTORY(arg, rate_hz)`` (``arg`` is ``ARG``, or ``""``) and returns an object that keeps the
recognizer contract (:class:`streamer.recognizers.base.Recognizer`):

- ``name: str``, ``rate_hz: float`` (how many frames per stream second it is given),
  ``needs_pixels: bool`` (True for a model of the image), ``has_ground_truth: bool`` (False);
- ``predict(frames) -> list[dict[str, float]]``: one dict per frame, the five action labels as
  keys, probabilities that sum to 1. Each frame is a ``streamer.frames.Frame``: ``image`` an
  ``H x W x 3`` uint8 RGB array (``service.frame_size`` square, 224 by default), ``pts_s`` its
  stream time. Called from a worker thread (it may block), never on the event loop.

``plugin:NAME`` loads the entry point ``NAME`` of the group ``llm_sap.recognizers`` (a package that
declares ``[project.entry-points."llm_sap.recognizers"] NAME = "my_pkg.recognizer:MyRecognizer"``).
A factory that cannot be imported, or an object that misses part of the contract, is bad input
(one line, exit 2); a wrong ``predict`` output fails the stream with the reason.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from planner.actions import ACTIONS
from streamer.exceptions import RecognizerError, UnknownRecognizerError
from streamer.frames import Frame

ENTRY_POINT_GROUP = "llm_sap.recognizers"
_ATTRIBUTES = {"name": str, "rate_hz": (int, float), "needs_pixels": bool, "has_ground_truth": bool}


def load_factory(target: str) -> tuple[Any, str]:
    """``MODULE:FACTORY[:ARG]`` or an entry point ``NAME`` → (the factory, ARG)."""
    module_name, _, rest = target.partition(":")
    if not rest:  # an entry point name
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
        if not found:
            raise UnknownRecognizerError(
                f"recognizer plugin {target!r}: give plugin:MODULE:CLASS, or install a package with an "
                f"entry point {target!r} in the group {ENTRY_POINT_GROUP!r}"
            )
        return found[0].load(), ""
    attr, _, arg = rest.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownRecognizerError(
            f"recognizer plugin {target!r}: cannot import {module_name} ({exc})"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnknownRecognizerError(f"recognizer plugin {target!r}: {module_name} has no callable {attr!r}")
    return factory, arg


def create(arg: str, rate_hz: float) -> Any:
    """The registry's factory for ``plugin:...``."""
    factory, factory_arg = load_factory(arg)
    try:
        recognizer = factory(factory_arg, rate_hz)
    except (TypeError, ValueError, OSError) as exc:
        raise UnknownRecognizerError(f"recognizer plugin {arg!r} could not be created: {exc}") from None
    missing = [
        f"{name} ({kind.__name__ if isinstance(kind, type) else 'number'})"
        for name, kind in _ATTRIBUTES.items()
        if not isinstance(getattr(recognizer, name, None), kind)
    ]
    if not callable(getattr(recognizer, "predict", None)):
        missing.append("predict(frames)")
    if missing:
        raise UnknownRecognizerError(
            f"recognizer plugin {arg!r}: {type(recognizer).__name__} lacks {', '.join(missing)} "
            "(the contract: streamer/recognizers/plugin.py)"
        )
    return CheckedRecognizer(recognizer, spec=f"plugin:{arg}")


class CheckedRecognizer:
    """A plugin recognizer whose ``predict`` output is checked against the contract."""

    def __init__(self, inner: Any, spec: str) -> None:
        self.inner = inner
        self.spec = spec
        self.name: str = inner.name
        self.rate_hz: float = float(inner.rate_hz)
        self.needs_pixels: bool = inner.needs_pixels
        self.has_ground_truth: bool = inner.has_ground_truth
        self.trained_on: str | None = getattr(inner, "trained_on", None)
        self.checkpoint: str | None = getattr(inner, "checkpoint", None)

    def predict(self, frames: Sequence[Frame]) -> list[dict[str, float]]:
        out = self.inner.predict(frames)
        check_output(out, len(frames), self.spec)
        return [dict(p) for p in out]


def check_output(out: Any, n_frames: int, spec: str) -> None:
    """One dict of the five actions' probabilities (summing to 1) per frame, or RecognizerError."""
    if not isinstance(out, list | tuple) or len(out) != n_frames:
        raise RecognizerError(
            f"recognizer {spec}: predict must return {n_frames} dicts, got {type(out).__name__}"
        )
    for probs in out:
        if not isinstance(probs, dict) or set(probs) != set(ACTIONS):
            keys = sorted(probs) if isinstance(probs, dict) else type(probs).__name__
            raise RecognizerError(
                f"recognizer {spec}: each output must have the five actions as keys, got {keys}"
            )
        values = list(probs.values())
        if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values) or not math.isclose(
            sum(values), 1.0, abs_tol=1e-3
        ):
            raise RecognizerError(f"recognizer {spec}: probabilities must be in [0, 1] and sum to 1")
