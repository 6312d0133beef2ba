"""The terminal view says each status change once ("assistant online" is not repeated)."""

from __future__ import annotations

from typing import Any

from streamer.terminal_view import format_message


def _status(state: str, stream: str, reason: str | None = None) -> dict[str, Any]:
    return {"type": "status", "state": state, "stream": stream, "reason": reason}


def _lines(statuses: list[dict[str, Any]]) -> list[str]:
    shown: dict[str, Any] | None = None
    out = []
    for payload in statuses:
        line = format_message("llm-sap/v1/demo/status", payload, shown)
        shown = payload
        if line is not None:
            out.append(line.plain)
    return out


def test_a_demo_run_says_online_once_then_only_what_changed() -> None:
    run = [
        _status("online", "running"),
        _status("online", "running"),  # the retained copy, seen again
        _status("online", "ended"),
        _status("offline", "ended", "shutdown"),
    ]
    assert _lines(run) == ["assistant online, stream running", "stream ended", "assistant offline (shutdown)"]


def test_a_failure_and_a_first_status_say_everything() -> None:
    assert _lines([_status("online", "failed", "decoder crashed")]) == [
        "assistant online, stream failed (decoder crashed)"
    ]
    assert _lines([_status("online", "running"), _status("offline", "running", "lost")]) == [
        "assistant online, stream running",
        "assistant offline (lost)",
    ]
