"""The subscriber's side of the status contract, as code (the README states the same rule).

Keep, per session, the status that is newest by this rule: the higher ``seq`` wins; on an equal
``seq`` the Last Will (``will: true``) wins, because the will repeats the seq of the newest status
published before it. A subscriber that applies it to every status it receives, in any order and
with duplicates, ends with the truth. Across sessions (a restarted service) compare ``time``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def is_newer(candidate: Mapping[str, Any], kept: Mapping[str, Any] | None) -> bool:
    """Does ``candidate`` replace ``kept`` (both statuses of one session)?"""
    if kept is None:
        return True
    if candidate["seq"] != kept["seq"]:
        return bool(candidate["seq"] > kept["seq"])
    return bool(candidate.get("will")) and not kept.get("will")


def newest_status(statuses: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The status a subscriber keeps after receiving ``statuses`` (one session)."""
    kept: Mapping[str, Any] | None = None
    for status in statuses:
        if is_newer(status, kept):
            kept = status
    return kept
