"""Recognizers, chosen by spec: ``timeline:FILE[#VIDEO]`` or ``checkpoint:FILE``; imported lazily."""

from __future__ import annotations

from streamer.exceptions import UnknownRecognizerError
from streamer.recognizers.base import Recognizer


def create_recognizer(spec: str, rate_hz: float = 2.0) -> Recognizer:
    kind, sep, arg = spec.partition(":")
    if not sep or not arg:
        raise UnknownRecognizerError(f"recognizer {spec!r} must be timeline:FILE[#VIDEO] or checkpoint:FILE")
    if kind == "timeline":
        from streamer.recognizers.timeline import TimelineRecognizer, load_timeline

        return TimelineRecognizer(load_timeline(arg), rate_hz=rate_hz)
    if kind == "checkpoint":
        from streamer.recognizers.frame_model import FrameClassifierRecognizer

        return FrameClassifierRecognizer.load(arg, rate_hz=rate_hz)
    raise UnknownRecognizerError(f"recognizer kind {kind!r} is unknown (known: timeline, checkpoint)")
