"""Frame sources, chosen by a spec string; implementations are imported only when chosen.

``open_source("synthetic", ...)`` → ``SyntheticSource``; ``open_source("webrtc", room=...)`` →
``WebRTCSource`` (fed by the web app's ``POST /offer``); a URL (``rtsp://...``, ``http://...``)
or a file path → ``VideoSource``. A new kind is one builder function in ``BUILDERS``, keyed by
the spec that selects it (e.g. ``"webrtc"``); anything not a key there is a URL or a path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamer.exceptions import SourceError
from streamer.sources.base import FrameSource, LatestFrameSlot, SourceStats

__all__ = ["BUILDERS", "FrameSource", "LatestFrameSlot", "SourceStats", "open_source", "source_kind"]

DEFAULT_OUTPUT_SIZE = (224, 224)

SourceBuilder = Callable[..., FrameSource]


def _synthetic(
    spec: str,
    *,
    realtime: bool,
    output_size: tuple[int, int] | None,
    lossless: bool | None,
    name: str | None,
    **kwargs: Any,
) -> FrameSource:
    from streamer.sources.synthetic import SyntheticSource

    return SyntheticSource(
        realtime=realtime,
        lossless=lossless,
        size=output_size or DEFAULT_OUTPUT_SIZE,
        name=name or "synthetic",
        **kwargs,
    )


def _video(
    spec: str,
    *,
    realtime: bool,
    output_size: tuple[int, int] | None,
    lossless: bool | None,
    name: str | None,
    **kwargs: Any,
) -> FrameSource:
    from streamer.sources.video import VideoSource

    return VideoSource(
        spec, realtime=realtime, lossless=lossless, output_size=output_size, name=name, **kwargs
    )


def _webrtc(
    spec: str,
    *,
    realtime: bool,
    output_size: tuple[int, int] | None,
    lossless: bool | None,
    name: str | None,
    room: str = "webrtc",
    **kwargs: Any,
) -> FrameSource:
    """A live WebRTC room; its peers attach through the web app (``streamer.web``), never lossless."""
    from streamer.sources.webrtc import WebRTCSource

    return WebRTCSource(room, output_size=output_size, name=name, **kwargs)


#: Named kinds; a spec that is not a key here is a URL or a file path, opened with PyAV.
BUILDERS: dict[str, SourceBuilder] = {"synthetic": _synthetic, "webrtc": _webrtc}
VIDEO_KIND = "video"


def source_kind(spec: str) -> str:
    """``"synthetic"`` (or another key of ``BUILDERS``), else ``"video"`` for a URL or a path."""
    return spec if spec in BUILDERS else VIDEO_KIND


def open_source(
    spec: str,
    *,
    realtime: bool,
    output_size: tuple[int, int] | None = DEFAULT_OUTPUT_SIZE,
    lossless: bool | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> FrameSource:
    """A source for ``spec``, not started. ``kwargs`` go to the implementation (e.g. ``timeline``
    for synthetic, ``thread_type`` or ``open_timeout_s`` for video). ``lossless`` defaults to
    ``not realtime``. Raises ``SourceError`` for an empty spec; opening errors come from
    ``start()``."""
    spec = spec.strip()
    if not spec:
        raise SourceError("source spec is empty: give 'synthetic', a video file path or a URL")
    builder: SourceBuilder = BUILDERS.get(source_kind(spec), _video)
    return builder(spec, realtime=realtime, output_size=output_size, lossless=lossless, name=name, **kwargs)
