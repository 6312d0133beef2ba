"""Which live ranking was in force when the next clip started, and its paper metrics (pure)."""

from __future__ import annotations

from typing import Any

from streamer.planning_moments import (
    Target,
    planning_report,
    rankings,
    rankings_before,
    timeline_targets,
)

ORDER = ["Aspiration", "Coagulation", "Dissection", "Tissue Retraction", "Vessel Clipping"]


def _rec(
    seq: int, clip: int, seen: float, top: str, *, revision: int = 0, refresh: bool = False
) -> dict[str, Any]:
    ranked = [top, *[a for a in ORDER if a != top]]
    return {
        "type": "recommendation",
        "seq": seq,
        "refresh": refresh,
        "clip": {"index": clip, "start_s": 0.0},
        "history": ["Dissection"] * (clip + 1),
        "ranked": [{"rank": i + 1, "action": a, "score": 0.2} for i, a in enumerate(ranked)],
        "basis": {"revision": revision, "seen_until_s": seen},
        "stream_time_s": seen,
    }


def test_moments_are_the_first_and_last_ranking_planned_before_the_switch() -> None:
    recs = [
        _rec(1, 0, 0.5, "Coagulation"),
        _rec(2, 0, 5.0, "Aspiration", revision=1),
        _rec(3, 0, 5.0, "Aspiration", revision=1, refresh=True),  # a text repeat: never a ranking
        _rec(4, 0, 9.9, "Vessel Clipping", revision=2),
        _rec(5, 0, 10.2, "Dissection", revision=3),  # planned after the switch at 10 s: not credited
        _rec(6, 1, 10.5, "Aspiration"),
    ]
    ranked = rankings(recs)
    assert [p["seq"] for p in ranked] == [1, 2, 4, 5, 6]
    at = rankings_before(ranked, 10.0)
    assert at.ranked("clip_start")[0] == "Coagulation" and at.ranked("before_next")[0] == "Vessel Clipping"
    assert at.refreshes == 2 and at.history == ("Dissection",)
    missed = rankings_before(ranked, 0.4)
    assert missed.clip_start is None and missed.ranked("before_next") == ()


def test_targets_from_a_timeline_and_the_report() -> None:
    rows = [
        (0.0, "Tissue Retraction"),
        (10.0, "Dissection"),
        (20.0, "Vessel Clipping"),
        (40.0, "Coagulation"),
    ]
    targets = timeline_targets(rows, end_s=30.0)
    assert targets == [
        Target(10.0, "Dissection", "Vessel Clipping"),
        Target(20.0, "Vessel Clipping", "Coagulation"),  # the one after is known even past the end
    ]
    recs = [
        _rec(1, 0, 0.5, "Dissection"),
        _rec(2, 0, 5.5, "Coagulation", revision=1),
        _rec(3, 1, 10.5, "Aspiration"),
        _rec(4, 1, 15.5, "Vessel Clipping", revision=1),
    ]
    report = planning_report(recs, targets, "VIDX")
    assert report["targets"] == 2 and report["missed"] == 0 and report["refreshed_targets"] == 2
    start, last = report["moments"]["clip_start"]["metrics"], report["moments"]["before_next"]["metrics"]
    assert start["SLAcc@1"] == 50.0 and last["SLAcc@1"] == 50.0  # clip 0 right at start, clip 1 right last
    assert start["ReSLAcc@1"] == 50.0 and last["ReSLAcc@1"] == 50.0
    assert last["SLAcc@3"] == 100.0 and last["SLAcc@2"] == 50.0  # clip 0: the answer third
    assert planning_report(recs, [], "VIDX") == {"targets": 0, "moments": {}}
