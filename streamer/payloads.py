"""MQTT contract v1: topics and payload building (pure), validated against the shipped schemas.

Topics, with ``{room}`` the operating-room id:
- ``llm-sap/v1/{room}/recommendation``          every recommendation, QoS 1
- ``llm-sap/v1/{room}/recommendation/current``  the latest, retained, with expiry
- ``llm-sap/v1/{room}/clip``                    clip started / ended, QoS 1
- ``llm-sap/v1/{room}/status``                  online / offline, retained; also the Last Will

Every payload carries ``id`` (unique: deduplicate on it), ``seq`` (per session and per message
type, +1 each time: a jump is a gap), ``session_id``, ``time`` and ``valid_until`` (UTC ISO
8601), and the stream time.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from planner.recommendation import Recommendation
from streamer.events import ClipEnded, ClipStarted
from streamer.exceptions import PayloadError

VERSION = 1
ADVISORY_NOTICE = "Advisory only: the operating surgeon decides every action."
_ROOM = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def validate_room(room: str) -> str:
    """Room ids become topic levels: letters, digits, ``_ . -`` only (no ``/ + #``)."""
    if not _ROOM.fullmatch(room):
        raise ValueError(f"room id {room!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return room


class Topics:
    def __init__(self, room: str, prefix: str = "llm-sap/v1") -> None:
        base = f"{prefix}/{validate_room(room)}"
        self.recommendation = f"{base}/recommendation"
        self.current = f"{base}/recommendation/current"
        self.clip = f"{base}/clip"
        self.status = f"{base}/status"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def _validators() -> dict[str, Draft202012Validator]:
    folder = resources.files("streamer") / "schemas"
    docs = {name: json.loads((folder / f"{name}.schema.json").read_text()) for name in (*_KINDS, "common")}
    registry: Registry[Any] = Registry().with_resources(
        (f"{name}.schema.json", Resource.from_contents(doc)) for name, doc in docs.items()
    )
    registry = registry.with_resources((doc["$id"], Resource.from_contents(doc)) for doc in docs.values())
    return {
        name: Draft202012Validator(
            docs[name], registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for name in _KINDS
    }


_KINDS: tuple[str, ...] = ("recommendation", "clip", "status")


def validate_payload(payload: Mapping[str, Any]) -> None:
    kind = payload.get("type")
    validator = _validators().get(str(kind))
    if validator is None:
        raise PayloadError(f"payload type {kind!r} is not one of {_KINDS}")
    error = next(iter(validator.iter_errors(payload)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise PayloadError(f"{kind} payload invalid at {where}: {error.message}")


class Payload(dict[str, Any]):
    """A payload (a plain JSON object) that also knows its expiry as a number (``expires_at``,
    epoch seconds): inside the service times are numbers, ISO text is only for subscribers."""

    def __init__(self, expires_at: float, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self.expires_at = expires_at


class PayloadFactory:
    """Builds one session's payloads for one room: ids, per-type seq counters, timestamps."""

    def __init__(
        self,
        room: str,
        *,
        session_id: str | None = None,
        recommendation_ttl_s: float = 120.0,
        status_ttl_s: float = 24 * 3600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.room = validate_room(room)
        self.session_id = session_id or uuid.uuid4().hex
        self.recommendation_ttl_s = recommendation_ttl_s
        self.status_ttl_s = status_ttl_s
        self._clock = clock or time.time
        self._seq: dict[str, int] = {}

    def _envelope(
        self, kind: str, ttl_s: float, stream_time_s: float | None, *, repeat_seq: bool = False
    ) -> Payload:
        """``repeat_seq``: take the newest seq of ``kind`` again instead of the next (the will)."""
        now = self._clock()
        if not repeat_seq or not self._seq.get(kind):
            self._seq[kind] = self._seq.get(kind, 0) + 1
        return Payload(now + ttl_s, {
            "v": VERSION,
            "type": kind,
            "id": uuid.uuid4().hex,
            "seq": self._seq[kind],
            "session_id": self.session_id,
            "room": self.room,
            "time": iso(now),
            "valid_until": iso(now + ttl_s),
            "stream_time_s": None if stream_time_s is None else round(max(stream_time_s, 0.0), 3),
        })  # fmt: skip

    def recommendation(
        self,
        rec: Recommendation,
        clip: ClipStarted,
        *,
        stream_time_s: float,
        stamps: Mapping[str, float],
        refresh: bool = False,
        text_model: str | None = None,
        basis: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``refresh``: this repeats a ranking already published, with its text; ``basis``: what the
        plan saw of the running clip (see ``streamer.pipeline.Basis``)."""
        payload = self._envelope("recommendation", self.recommendation_ttl_s, stream_time_s)
        response = None
        if rec.response is not None:
            response = {**rec.response.to_dict(), "model": text_model or rec.model}
        payload.update(
            advisory=True,
            notice=ADVISORY_NOTICE,
            clip={"index": clip.index, "action": clip.action, "start_s": round(clip.start_s, 3)},
            current_action=rec.current_action,
            history=list(rec.history),
            ranked=[
                {"rank": i, "action": s.action, "score": round(s.score, 6)}
                for i, s in enumerate(rec.ranked, 1)
            ],
            engine=rec.engine,
            model=rec.model,
            degraded=rec.degraded,
            degraded_reason=rec.degraded_reason,
            refresh=refresh,
            basis=None if basis is None else dict(basis),
            next_in_s=_next_in(rec, basis, stream_time_s - clip.start_s),
            next_or_after=[
                {"rank": i, "action": s.action, "score": round(s.score, 6)}
                for i, s in enumerate(rec.next_or_after, 1)
            ],
            likeliest_two_steps=list(rec.best_pair) if rec.best_pair else None,
            response=response,
            latency_ms=latencies_ms(stamps),
            stamps={k: round(v, 6) for k, v in stamps.items()},
        )
        validate_payload(payload)
        return payload

    def clip(self, event: ClipStarted | ClipEnded, stamps: Mapping[str, float]) -> dict[str, Any]:
        stream_time = event.detected_s
        payload = self._envelope("clip", self.recommendation_ttl_s, stream_time)
        clip: dict[str, Any] = {
            "index": event.index,
            "action": event.action,
            "start_s": round(event.start_s, 3),
        }
        if isinstance(event, ClipEnded):
            clip["end_s"] = round(event.end_s, 3)
        payload.update(
            event="started" if isinstance(event, ClipStarted) else "ended",
            clip=clip,
            detected_s=round(event.detected_s, 3),
            stamps={k: round(v, 6) for k, v in stamps.items()},
        )
        validate_payload(payload)
        return payload

    def status(
        self,
        state: str,
        stream: str,
        reason: str | None = None,
        *,
        engine: str | None = None,
        model: str | None = None,
        will: bool = False,
        dropped: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """A status. ``will=True``: the Last Will, which repeats the newest status seq (it wins the
        tie: see the README's status rule). ``dropped``: messages lost by policy (final status)."""
        payload = self._envelope("status", self.status_ttl_s, None, repeat_seq=will)
        payload.update(state=state, stream=stream, reason=reason)
        if will:
            payload["will"] = True
        if dropped is not None:
            payload["dropped"] = dict(dropped)
        if engine:
            payload["engine"] = engine
        if model:
            payload["model"] = model
        validate_payload(payload)
        return payload


def _next_in(
    rec: Recommendation, basis: Mapping[str, Any] | None, elapsed_s: float
) -> dict[str, float] | None:
    """The current clip's remaining time as a range, given how long it has lasted (the basis's
    elapsed time when there is one, else stream time minus the clip's start)."""
    if rec.time_to_next is None or rec.current_action is None:
        return None
    if basis is not None and basis.get("clip_elapsed_s") is not None:
        elapsed_s = float(basis["clip_elapsed_s"])
    result: dict[str, float] = rec.time_to_next.remaining(rec.current_action, max(0.0, elapsed_s)).to_dict()
    return result


#: Wall-clock stamps, in pipeline order; latency of a stage = its stamp minus the previous one.
#: ``plan_requested``: the clip's memory and basis built, the plan queued (``planned`` minus the
#: ranking's own time is the hop to the engine and back)
STAGES: tuple[str, ...] = (
    "captured",
    "decoded",
    "recognized",
    "segmented",
    "plan_requested",
    "planned",
    "published",
)


def latencies_ms(stamps: Mapping[str, float]) -> dict[str, float]:
    """Per-stage latency in ms from wall-clock stamps, plus ``total`` (first to last stamp)."""
    present = [s for s in STAGES if s in stamps]
    out: dict[str, float] = {}
    for prev, cur in itertools.pairwise(present):
        out[cur] = round((stamps[cur] - stamps[prev]) * 1000, 3)
    if len(present) >= 2:
        out["total"] = round((stamps[present[-1]] - stamps[present[0]]) * 1000, 3)
    return out


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
