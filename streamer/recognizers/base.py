"""The recognizer contract: frames in, per-frame action probabilities out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from streamer.frames import Frame


class Recognizer(Protocol):
    """Maps frames to probabilities over the five actions.

    ``predict`` may block (a torch forward pass): the pipeline calls it from a worker thread,
    at most ``rate_hz`` times per stream second.
    """

    name: str
    rate_hz: float
    needs_pixels: bool  # False for oracles that read stream time only
    has_ground_truth: bool  # True for oracles that read annotated labels (no smoothing needed)

    def predict(self, frames: Sequence[Frame]) -> list[dict[str, float]]: ...
