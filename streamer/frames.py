"""A decoded video frame, with its stream time and wall-clock stamps."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

#: The side of the square frames handed to recognizers and the page (``service.frame_size``).
DEFAULT_FRAME_SIZE = 224
DEFAULT_OUTPUT_SIZE = (DEFAULT_FRAME_SIZE, DEFAULT_FRAME_SIZE)


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


#: Area averaging, the same interpolation the video sources use when they decode.
RESIZE_INTERPOLATION = "AREA"
_reformatters = threading.local()


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H×W×3 RGB uint8 image resized to ``size`` (width, height) with area averaging (FFmpeg's
    swscale through PyAV, as the sources decode). The one resize used for keyframes and for the
    recognizer's input, in serving and in training. Returns the image itself when already that size."""
    width, height = size
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    from av import VideoFrame
    from av.video.reformatter import VideoReformatter

    reformatter = getattr(_reformatters, "value", None)
    if reformatter is None:  # one per thread: a shared reformatter is much faster than frame.reformat
        reformatter = _reformatters.value = VideoReformatter()
    frame = VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
    out = reformatter.reformat(
        frame, width, height, format="rgb24", interpolation=RESIZE_INTERPOLATION, threads=1
    )
    resized: np.ndarray = out.to_ndarray()
    return resized
