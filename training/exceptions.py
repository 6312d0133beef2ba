"""Errors of the training package. Each is one line that names the bad value."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of the training package's errors."""


class AnnotationError(TrainingError, ValueError):
    """The annotation file is missing or malformed (names video, clip and field)."""


class PredictionsError(TrainingError, ValueError):
    """A predictions file is malformed, misses samples or names unknown labels."""


class ConfigError(TrainingError, ValueError):
    """A configuration file or flag names an unknown key or a bad value."""


class UsageError(TrainingError, ValueError):
    """A command line that cannot be run as given (argparse rejections included)."""
