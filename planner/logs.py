"""Structured logging, set up in one place. Console for people, JSON lines for machines.

Logs carry event names and numbers only: never frame pixels or patient data.

Our own events go through structlog. Other libraries log through the standard ``logging`` module,
warn through ``warnings`` and draw tqdm progress bars; below ``debug`` all of that is kept out of
the terminal (amqtt's protocol-probe warnings, torch / transformers FutureWarnings, "Loading weights"
bars), except errors, which are rendered like our own lines (in JSON too, when the format is JSON).
At ``debug`` their warnings show, in the same format.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]

#: Read by Hugging Face libraries when they are imported: no progress bars, errors only.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
#: Environment variables this module set (and ``reset_logging`` removes again).
_env_set: list[str] = []
_handler: logging.Handler | None = None
_hf_quieted = False


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
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    verbose = numeric <= logging.DEBUG
    third_party_level = logging.WARNING if verbose else max(numeric, logging.ERROR)
    _route_stdlib(renderer, shared, stream or sys.stderr, third_party_level)
    _quiet_third_party(verbose)


def reset_logging() -> None:
    """Back to structlog's and the standard library's defaults (tests call this between cases)."""
    global _handler
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        root.removeHandler(_handler)
    _handler = None
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
    while _env_set:
        os.environ.pop(_env_set.pop(), None)
    if _hf_quieted:
        _set_hf_quiet(False)


def _route_stdlib(
    renderer: structlog.typing.Processor,
    shared: list[structlog.typing.Processor],
    stream: TextIO,
    level: int,
) -> None:
    """Other libraries' log records (and, through ``py.warnings``, their warnings) rendered like ours."""
    global _handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    if _handler is not None:  # ours, from an earlier call
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    logging.captureWarnings(True)  # warnings.warn → the "py.warnings" logger: shown at debug only


def _quiet_third_party(verbose: bool) -> None:
    if not verbose:
        for key, value in _QUIET_ENV.items():
            if key not in os.environ:
                os.environ[key] = value
                _env_set.append(key)
    _set_hf_quiet(not verbose)


def _set_hf_quiet(quiet: bool) -> None:
    """Libraries imported before this call read the environment too early: tell them directly."""
    global _hf_quieted
    _hf_quieted = quiet
    hf_logging = sys.modules.get("transformers.utils.logging")
    ds_tqdm = sys.modules.get("datasets.utils.tqdm")
    with warnings.catch_warnings():  # "cannot enable: the environment says otherwise" is fine
        warnings.simplefilter("ignore")
        if hf_logging is not None:  # its bars and the Hub's
            hf_logging.set_verbosity(logging.ERROR if quiet else logging.WARNING)
            (hf_logging.disable_progress_bar if quiet else hf_logging.enable_progress_bar)()
        if ds_tqdm is not None:
            (ds_tqdm.disable_progress_bars if quiet else ds_tqdm.enable_progress_bars)()
