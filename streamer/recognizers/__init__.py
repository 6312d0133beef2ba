"""Recognizers, chosen by spec through the plugin registry: ``timeline:FILE[#VIDEO]``,
``checkpoint:FILE``, ``torchscript:FILE`` (any TorchScript classifier with an ``llm-sap.json``
header), or your own, ``plugin:MODULE:FACTORY[:ARG]`` / ``plugin:ENTRY_POINT`` (the contract:
``streamer/recognizers/plugin.py``); each implementation is imported only when chosen."""

from __future__ import annotations

from collections.abc import Callable

from planner.registry import PluginRegistry
from streamer.exceptions import UnknownRecognizerError
from streamer.recognizers.base import Recognizer

#: name -> "module:factory"; the factory takes (arg, rate_hz) and returns a Recognizer.
RECOGNIZERS = PluginRegistry(
    "recognizer",
    {
        "timeline": "streamer.recognizers.timeline:create",
        "checkpoint": "streamer.recognizers.frame_model:create",
        "torchscript": "streamer.recognizers.torchscript:create",
        "plugin": "streamer.recognizers.plugin:create",
    },
    error=UnknownRecognizerError,
)


def create_recognizer(spec: str, rate_hz: float = 2.0) -> Recognizer:
    factory: Callable[[str, float], Recognizer]
    parsed = RECOGNIZERS.parse(spec)
    if not parsed.arg:
        raise UnknownRecognizerError(
            f"recognizer {spec!r} needs an argument: timeline:FILE[#VIDEO], checkpoint:FILE, "
            "torchscript:FILE or plugin:MODULE:FACTORY"
        )
    factory = RECOGNIZERS.load(parsed.name)
    return factory(parsed.arg, rate_hz)
