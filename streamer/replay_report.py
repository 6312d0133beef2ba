"""What a replay produces: clips found against the timeline, recommendations, latency, throughput.

The pieces here are pure: a sink that records payloads, and the comparison of found clips with
the timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamer.messages import Outgoing
from streamer.recognizers.timeline import Timeline


@dataclass
class RecordingSink:
    """Keeps every message it is given (bounded), in order."""

    limit: int = 100_000
    messages: list[Outgoing] = field(default_factory=list)
    dropped: int = 0

    def emit(self, message: Outgoing) -> None:
        if len(self.messages) >= self.limit:
            self.dropped += 1
            return
        self.messages.append(message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Payloads of one type, each once (not the retained ``/current`` copies)."""
        return [dict(m.payload) for m in self.messages if m.kind == kind and not m.retained_copy]


def true_clips(timeline: Timeline, end_s: float) -> list[dict[str, Any]]:
    """The timeline's clips that overlap the stream [0, end_s]."""
    rows = timeline.rows()
    out = []
    for i, (start, action) in enumerate(rows):
        stop = rows[i + 1][0] if i + 1 < len(rows) else end_s
        if start >= end_s:
            break
        out.append({"action": action, "start_s": start, "end_s": min(stop, end_s)})
    return out


def compare_clips(
    found: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], tolerance_s: float = 5.0
) -> dict[str, Any]:
    """Match each true clip to a found clip with the same action starting within ``tolerance_s``."""
    used: set[int] = set()
    errors: list[float] = []
    for t in truth:
        best = None
        for j, f in enumerate(found):
            if j in used or f["action"] != t["action"]:
                continue
            err = f["start_s"] - t["start_s"]
            if abs(err) <= tolerance_s and (best is None or abs(err) < abs(best[1])):
                best = (j, err)
        if best is not None:
            used.add(best[0])
            errors.append(best[1])
    return {
        "true_clips": len(truth),
        "found_clips": len(found),
        "matched": len(errors),
        "missed": len(truth) - len(errors),
        "extra": len(found) - len(used),
        "onset_error_s": {
            "mean_abs": round(sum(abs(e) for e in errors) / len(errors), 3) if errors else None,
            "max_abs": round(max(abs(e) for e in errors), 3) if errors else None,
        },
        "tolerance_s": tolerance_s,
        "time_agreement": _time_agreement(found, truth),
    }


def _time_agreement(found: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]]) -> float | None:
    """Share of the stream time (over the true clips' span) where the found action is the true one."""
    total = sum(t["end_s"] - t["start_s"] for t in truth)
    if total <= 0:
        return None
    agree = 0.0
    for t in truth:
        for f in found:
            if f["action"] != t["action"]:
                continue
            lo, hi = max(t["start_s"], f["start_s"]), min(t["end_s"], f["end_s"])
            agree += max(0.0, hi - lo)
    return round(float(agree / total), 4)


def live_summary(
    state: Any, latency: dict[str, dict[str, float]], payloads: Sequence[dict[str, Any]], captions: Any = None
) -> dict[str, Any]:
    """What the live NHFM did: rankings and refreshes, keyframes per ranking, captions, texts.

    ``state``: the pipeline's ``StreamState``; ``latency``: its latency summary; ``payloads``: the
    recommendation payloads; ``captions``: the process's ``CaptionWorker`` (or None)."""
    ranked = [p for p in payloads if not p.get("refresh")]
    keyframes = [int(p["basis"]["keyframes"]) for p in ranked if p.get("basis")]
    at_start = [
        int(p["basis"]["keyframes"]) for p in ranked if (p.get("basis") or {}).get("trigger") == "clip_start"
    ]
    refreshed = [
        int(p["basis"]["keyframes"]) for p in ranked if (p.get("basis") or {}).get("trigger") == "refresh"
    ]

    def stats(values: Sequence[int]) -> dict[str, Any]:
        if not values:
            return {"n": 0}
        return {
            "n": len(values),
            "mean": round(sum(values) / len(values), 2),
            "min": min(values),
            "max": max(values),
        }

    return {
        "rankings": state.rankings,
        "clip_start": len(at_start),
        "refreshes": state.refreshes,
        "keyframes_per_recommendation": {
            "all": stats(keyframes),
            "clip_start": stats(at_start),
            "refresh": stats(refreshed),
        },
        "with_caption": sum(1 for p in ranked if (p.get("basis") or {}).get("caption")),
        "captions": {
            "received": state.captions,
            "latency_ms": latency.get("caption", {"n": 0}),
            "worker": captions.summary() if captions is not None else None,
        },
        "texts": {
            "published": state.texts,
            "late": state.late_texts,
            "dropped": state.dropped_texts,
            "unparsed": state.unparsed_texts,
        },
        "plan_rank_ms": latency.get("plan_rank", {"n": 0}),
        "plan_hop_ms": latency.get("plan_hop", {"n": 0}),
        "refresh_ms": latency.get("refresh", {"n": 0}),
    }
