"""Frame sources, chosen by a spec string through the plugin registry; imported only when chosen.

``synthetic`` → ``SyntheticSource``; ``webrtc`` → ``WebRTCSource`` (fed by the web app's
``POST /offer``); anything else is a video: a URL (``rtsp://...``, ``http://...``) or a file path,
opened with PyAV (``VideoSource``). A new kind is one builder ``(spec, **options) -> FrameSource``
registered in ``SOURCES``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.registry import PluginRegistry
from streamer.exceptions import SourceError
from streamer.frames import DEFAULT_OUTPUT_SIZE
from streamer.sources.base import FrameSource, LatestFrameSlot, SourceStats

__all__ = ["SOURCES", "FrameSource", "LatestFrameSlot", "SourceStats", "local_file", "open_source"]

SourceBuilder = Callable[..., FrameSource]

SOURCES = PluginRegistry(
    "frame source",
    {
        "synthetic": "streamer.sources.synthetic:build",
        "webrtc": "streamer.sources.webrtc:build",
        "video": "streamer.sources.video:build",
    },
    error=SourceError,
    fallback="video",
)


def source_kind(spec: str) -> str:
    """The registered kind of ``spec``: ``synthetic``, ``webrtc``, or ``video`` for a URL or a path."""
    return SOURCES.parse(spec).name


def local_file(spec: str) -> Path | None:
    """The file a spec names, when it is a local video (not a named kind, not a URL)."""
    if source_kind(spec) != "video":
        return None
    from streamer.sources.video import is_url  # PyAV-free helper, but keep av out of import time

    return None if is_url(spec) else Path(spec)


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
    for synthetic, ``thread_type`` or ``open_timeout_s`` for video, ``room`` for webrtc).
    ``lossless`` defaults to ``not realtime``. Raises ``SourceError`` for an empty spec; opening
    errors come from ``start()``."""
    spec = spec.strip()
    if not spec:
        raise SourceError("source spec is empty: give 'synthetic', a video file path or a URL")
    builder: SourceBuilder
    builder, arg = SOURCES.resolve(spec)
    return builder(
        arg or spec, realtime=realtime, output_size=output_size, lossless=lossless, name=name, **kwargs
    )
