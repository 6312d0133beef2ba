"""The demo's terminal view says what each recommendation saw (clip start or an in-clip refresh)."""

from __future__ import annotations

from typing import Any

from streamer.terminal_view import basis_text, format_message

ACTIONS = ["Aspiration", "Coagulation", "Dissection", "Tissue Retraction", "Vessel Clipping"]


def _payload(basis: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "recommendation",
        "stream_time_s": 72.0,
        "refresh": False,
        "ranked": [{"rank": i + 1, "action": a, "score": 0.2} for i, a in enumerate(ACTIONS)],
        "engine": "transformers",
        "degraded": False,
        "latency_ms": {"total": 12.0},
        "basis": basis,
    }


def test_refresh_and_clip_start_say_what_they_saw() -> None:
    refresh = {"trigger": "refresh", "revision": 2, "keyframes": 5, "caption": True, "clip_elapsed_s": 12.2}
    start = {"trigger": "clip_start", "revision": 0, "keyframes": 1, "caption": False, "clip_elapsed_s": 0.5}
    assert basis_text(refresh) == "updated 12 s into the clip, 5 keyframes, caption"
    assert basis_text(start) == "at clip start, 1 keyframe"
    assert basis_text({**start, "keyframes": 0}) == "at clip start"  # a label-only planner saw no frames
    assert basis_text({**refresh, "keyframes": 0, "caption": False}) == "updated 12 s into the clip"
    assert basis_text(None) == ""
    line = format_message("llm-sap/v1/or-1/recommendation", _payload(refresh))
    assert line is not None and "next ▷" in line.plain and line.plain.endswith("5 keyframes, caption")
    first = format_message("llm-sap/v1/or-1/recommendation", _payload(start))
    assert first is not None and "next ▶" in first.plain and "at clip start" in first.plain
    assert format_message("llm-sap/v1/or-1/recommendation/current", _payload(start)) is None
