"""Quiet terminals: other libraries' warnings, log lines and progress bars stay out unless debug."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import warnings

import pytest
import structlog

from planner.logs import configure_logging, reset_logging


def _third_party_noise() -> None:
    logging.getLogger("amqtt.broker").warning("Failed to initialize client session: Invalid protocol: 5")
    warnings.warn_explicit(
        "`torch_dtype` is deprecated", FutureWarning, filename="transformers/modeling_utils.py", lineno=1
    )
    logging.getLogger("amqtt.broker").error("listener crashed")
    structlog.get_logger().info("ours.event", n=1)


def test_below_debug_other_libraries_show_errors_only_in_our_format() -> None:
    buf = io.StringIO()
    configure_logging("console", "info", stream=buf)
    _third_party_noise()
    out = buf.getvalue()
    assert "Invalid protocol" not in out
    assert "deprecated" not in out
    assert "listener crashed" in out and "amqtt.broker" in out and "[error" in out
    assert "ours.event" in out
    assert "ERROR:amqtt" not in out  # not the bare stdlib format
    assert out.count("listener crashed") == 1


def test_at_debug_their_warnings_show() -> None:
    buf = io.StringIO()
    configure_logging("console", "debug", stream=buf)
    _third_party_noise()
    out = buf.getvalue()
    assert "Invalid protocol" in out
    assert "`torch_dtype` is deprecated" in out
    assert "listener crashed" in out


def test_json_format_keeps_every_line_json() -> None:
    buf = io.StringIO()
    configure_logging("json", "info", stream=buf)
    _third_party_noise()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    seen = {(d["event"], d["level"]) for d in lines}
    assert seen == {("listener crashed", "error"), ("ours.event", "info")}


def test_configuring_twice_prints_each_line_once() -> None:
    buf = io.StringIO()
    configure_logging("console", "info", stream=buf)
    configure_logging("console", "info", stream=buf)
    logging.getLogger("x").error("once")
    assert buf.getvalue().count("once") == 1


def test_hugging_face_progress_bars_and_verbosity_set_before_import_and_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(key, raising=False)
    configure_logging("console", "info", stream=io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    reset_logging()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    configure_logging("console", "debug", stream=io.StringIO())
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_a_library_imported_later_draws_no_bar_and_one_imported_earlier_is_told() -> None:
    pytest.importorskip("transformers")
    code = (
        "from planner.logs import configure_logging\n"
        "import sys\n"
        "early = sys.argv[1] == 'early'\n"
        "if early:\n"
        "    from transformers.utils import logging as hf\n"
        "configure_logging('console', sys.argv[2])\n"
        "from transformers.utils import logging as hf\n"
        "print(hf.is_progress_bar_enabled(), hf.get_verbosity())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    seen = {}
    for when in ("early", "late"):
        for level in ("info", "debug"):
            out = subprocess.run(
                [sys.executable, "-c", code, when, level], capture_output=True, text=True, env=env, check=True
            )
            seen[when, level] = out.stdout.split()
    assert seen["early", "info"] == seen["late", "info"] == ["False", str(logging.ERROR)]
    assert seen["late", "debug"] == ["True", str(logging.WARNING)]


def test_reset_removes_our_handler() -> None:
    configure_logging("console", "info", stream=io.StringIO())
    reset_logging()
    root = logging.getLogger()
    assert not any(isinstance(h.formatter, structlog.stdlib.ProcessorFormatter) for h in root.handlers)
