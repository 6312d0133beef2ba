"""A decoded video frame, with its stream time and wall-clock stamps."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from av.video.frame import VideoFrame

#: The side of the square frames handed to recognizers and the page (``service.frame_size``).
DEFAULT_FRAME_SIZE = 224
DEFAULT_OUTPUT_SIZE = (DEFAULT_FRAME_SIZE, DEFAULT_FRAME_SIZE)


class Frame:
    """One decoded frame.

    ``pts_s`` is the stream time (seconds from the start of the stream); ``decoded_at`` is the
    wall clock (``time.time()``) when decoding finished, ``captured_at`` when the frame was
    captured if the source knows it (a live feed), else the same as ``decoded_at``.

    ``image`` is H×W×3 RGB uint8 at the source's output size; it never goes to logs. A source
    either gives it ready (``image=``) or hands over the decoded ``av.VideoFrame``
    (``video_frame=``, with ``output_size``): then the RGB conversion happens only when a
    consumer asks for it, in the consumer's thread (recognizer, keyframe sampler), once per
    size (``image_at``), so frames nobody uses are never converted. Thread-safe.
    """

    __slots__ = ("_images", "_lock", "_video", "captured_at", "decoded_at", "index", "output_size", "pts_s")

    def __init__(
        self,
        index: int,
        pts_s: float,
        image: np.ndarray | None = None,
        decoded_at: float = 0.0,
        captured_at: float | None = None,
        *,
        video_frame: VideoFrame | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> None:
        if (image is None) == (video_frame is None):
            raise ValueError("a Frame needs exactly one of image= and video_frame=")
        self.index = index
        self.pts_s = pts_s
        self.decoded_at = decoded_at
        self.captured_at = captured_at
        self._video = video_frame
        self._images: dict[tuple[int, int] | None, np.ndarray] = {}
        self._lock = threading.Lock()
        self.output_size: tuple[int, int] | None
        if image is not None:
            self.output_size = (int(image.shape[1]), int(image.shape[0]))
            self._images[self.output_size] = image
        else:
            self.output_size = output_size

    @property
    def image(self) -> np.ndarray:
        """RGB at the source's output size (converted on first use, in the caller's thread)."""
        return self.image_at(self.output_size)

    @property
    def converted(self) -> int:
        """How many RGB images this frame holds (conversions done, or the one given)."""
        return len(self._images)

    def image_at(self, size: tuple[int, int] | None) -> np.ndarray:
        """RGB at ``size`` (width, height; None: the decoded size), converted once per size from
        the decoded frame (or resized from the given image). Call it off the event loop."""
        with self._lock:
            cached = self._images.get(size)
            if cached is not None:
                return cached
            if self._video is not None:
                image = video_frame_to_rgb(self._video, size)
            else:
                given = self._images[self.output_size]
                image = given if size is None else resize_rgb(given, size)
            self._images[size] = image
            return image

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, pts_s={self.pts_s}, decoded_at={self.decoded_at})"


#: Area averaging, the same interpolation the video sources use when they decode.
RESIZE_INTERPOLATION = "AREA"
_reformatters = threading.local()


def video_frame_to_rgb(frame: VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """A decoded frame as H×W×3 RGB uint8 at ``size`` (width, height; None: its own), area
    averaging, with this thread's reformatter (one shared reformatter is much faster than
    ``frame.reformat``)."""
    width, height = size or (frame.width, frame.height)
    out = _reformatter().reformat(
        frame, width, height, format="rgb24", interpolation=RESIZE_INTERPOLATION, threads=1
    )
    image: np.ndarray = out.to_ndarray()
    return image


def _reformatter() -> Any:
    from av.video.reformatter import VideoReformatter

    reformatter = getattr(_reformatters, "value", None)
    if reformatter is None:
        reformatter = _reformatters.value = VideoReformatter()
    return reformatter


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H×W×3 RGB uint8 image resized to ``size`` (width, height) with area averaging (FFmpeg's
    swscale through PyAV, as the sources decode). The one resize used for keyframes and for the
    recognizer's input, in serving and in training. Returns the image itself when already that size."""
    width, height = size
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    from av import VideoFrame as AVFrame

    frame = AVFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint8), format="rgb24")
    out = _reformatter().reformat(
        frame, width, height, format="rgb24", interpolation=RESIZE_INTERPOLATION, threads=1
    )
    resized: np.ndarray = out.to_ndarray()
    return resized
