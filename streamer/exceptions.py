"""Errors of the streaming service. Each names the bad value; bad input maps to exit code 2."""

from __future__ import annotations


class StreamerError(Exception):
    """Base class of the streamer package's errors."""


class SourceError(StreamerError):
    """A video source cannot be opened or decoded (missing file, corrupt data, unreachable URL)."""


class TimelineError(StreamerError, ValueError):
    """A timeline annotation is missing or malformed (names the row and the value)."""


class CheckpointError(StreamerError, ValueError):
    """A recognizer checkpoint is missing or malformed."""


class BrokerURLError(StreamerError, ValueError):
    """An MQTT broker URL cannot be understood."""


class PayloadError(StreamerError, ValueError):
    """A payload fails its JSON Schema (a bug: payloads are validated before they go out)."""


class StreamFailedError(StreamerError):
    """A stream failed while running (a stage raised, the broker refused us): exit code 1, not 2."""

    exit_code = 1


class UnknownRecognizerError(StreamerError, ValueError):
    """A recognizer spec that is neither timeline:FILE[#VIDEO] nor checkpoint:FILE."""


class RecognizerError(StreamerError):
    """A recognizer broke its contract while running (a plugin's ``predict`` output)."""
