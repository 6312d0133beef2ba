"""Which live ranking was in force when the next clip started (pure; for replay evaluation).

A planning target is a true clip (its start and action). The recommendation that predicts it is
one made while the clip before it ran. Two moments are scored, as the paper's timing defines
them (see the README's "Timing"):

- ``clip_start``: the first recommendation of the live clip in force before the target started
  (made from labels and whatever frames that clip had when it was confirmed);
- ``before_next``: the last recommendation of that clip whose plan saw nothing of the target
  clip: planned from frames up to ``basis.seen_until_s`` < the target's start.

Only recommendations planned before the target started count (``basis.seen_until_s``), so a
recommendation made after the switch, or a clip the segmenter confirmed late, is never credited
with knowledge of the answer. A target with no such recommendation is ``missed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from planner.metrics import Scored, compute_metrics

MOMENTS: tuple[str, ...] = ("clip_start", "before_next")
_EPS = 1e-6


@dataclass(frozen=True)
class TargetRankings:
    """What the live path had published for one target when the target clip started."""

    target_start_s: float
    clip_start: dict[str, Any] | None  # the recommendation payloads (None: missed)
    before_next: dict[str, Any] | None

    def ranked(self, moment: str) -> tuple[str, ...]:
        """The ranked labels at ``moment`` (empty when missed)."""
        payload = self.clip_start if moment == "clip_start" else self.before_next
        if payload is None:
            return ()
        return tuple(r["action"] for r in payload["ranked"])

    @property
    def history(self) -> tuple[str, ...]:
        """a_1..a_t as the live path had them for this target (empty when missed)."""
        return tuple(self.clip_start["history"]) if self.clip_start else ()

    @property
    def refreshes(self) -> int:
        """In-clip re-plans between the two moments (0 when only the clip-start ranking exists)."""
        if self.before_next is None:
            return 0
        return int(self.before_next["basis"]["revision"]) - int(
            self.clip_start["basis"]["revision"] if self.clip_start else 0
        )


def seen_until_s(payload: dict[str, Any]) -> float:
    """The stream time of the newest frame known when this recommendation was planned."""
    basis = payload.get("basis") or {}
    value = basis.get("seen_until_s")
    return float(value) if value is not None else float(payload["stream_time_s"] or 0.0)


def clip_starts(payloads: Iterable[dict[str, Any]]) -> list[float]:
    """The start second of each clip the live path found, by clip index (its clip-started messages)."""
    started = {
        int(p["clip"]["index"]): float(p["clip"]["start_s"])
        for p in payloads
        if p.get("type") == "clip" and p.get("event") == "started"
    }
    return [started[i] for i in sorted(started)]


def rankings(payloads: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ranking payloads (not the text-only repeats), in publishing order."""
    recs = [p for p in payloads if p.get("type") == "recommendation" and not p.get("refresh")]
    return sorted(recs, key=lambda p: int(p["seq"]))


def rankings_before(recommendations: Sequence[dict[str, Any]], target_start_s: float) -> TargetRankings:
    """The two moments for a target clip starting at ``target_start_s`` (stream seconds).

    ``recommendations``: ranking payloads of one stream (see :func:`rankings`)."""
    seen = [p for p in recommendations if seen_until_s(p) < target_start_s - _EPS]
    if not seen:
        return TargetRankings(target_start_s, None, None)
    index = max(int(p["clip"]["index"]) for p in seen)
    of_clip = [p for p in seen if int(p["clip"]["index"]) == index]
    first = min(of_clip, key=lambda p: int(p["seq"]))
    last = max(of_clip, key=lambda p: int(p["seq"]))
    return TargetRankings(target_start_s, first, last)


@dataclass(frozen=True)
class Target:
    """A true clip to predict: its start, its action and the action after it (relaxed metrics)."""

    start_s: float
    action: str
    next_action: str | None


def timeline_targets(rows: Sequence[tuple[float, str]], end_s: float) -> list[Target]:
    """Every true clip that has a predecessor and starts before ``end_s`` (the video's end); the
    action after it comes from the timeline even when the video ends first."""
    out = []
    for i in range(1, len(rows)):
        start, action = rows[i]
        if start >= end_s:
            break
        after = rows[i + 1][1] if i + 1 < len(rows) else None
        out.append(Target(float(start), action, after))
    return out


def score_targets(
    recommendations: Sequence[dict[str, Any]], targets: Sequence[Target], video: str
) -> tuple[dict[str, list[Scored]], list[TargetRankings]]:
    """The scored items of each moment (a missed target scores an empty ranking: a miss)."""
    ranked = rankings(recommendations)
    found = [rankings_before(ranked, t.start_s) for t in targets]
    items = {
        m: [Scored(video, t.action, t.next_action, r.ranked(m)) for t, r in zip(targets, found, strict=True)]
        for m in MOMENTS
    }
    return items, found


def planning_report(
    recommendations: Sequence[dict[str, Any]], targets: Sequence[Target], video: str
) -> dict[str, Any]:
    """The paper's metrics of what the live path published, at both moments (JSON-ready)."""
    if not targets:
        return {"targets": 0, "moments": {}}
    items, found = score_targets(recommendations, targets, video)
    return {
        "targets": len(targets),
        "missed": sum(1 for r in found if r.clip_start is None),
        "refreshed_targets": sum(1 for r in found if r.refreshes > 0),
        "moments": {m: compute_metrics(items[m]).to_dict() for m in MOMENTS},
    }
