"""A decoded video frame, with its stream time and wall-clock stamps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``pts_s`` is the stream time (seconds from the start of the stream); ``decoded_at`` is the
    wall clock (``time.time()``) when decoding finished, ``captured_at`` when the frame was
    captured if the source knows it (a live feed), else the same as ``decoded_at``.
    ``image`` is H×W×3 RGB uint8, possibly resized by the source; it never goes to logs.
    """

    index: int
    pts_s: float
    image: np.ndarray = field(repr=False, compare=False)
    decoded_at: float
    captured_at: float | None = None
