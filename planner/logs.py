"""Structured logging, set up in one place. Console for people, JSON lines for machines.

Logs carry event names and numbers only: never frame pixels or patient data.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]


def configure_logging(fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging) to ``stream`` (stderr by default)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"log level must be debug, info, warning or error, got {level!r}")
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    else:
        raise ValueError(f"log format must be 'console' or 'json', got {fmt!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream or sys.stderr, force=True)


def reset_logging() -> None:
    """Back to structlog's defaults (tests call this between cases)."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
