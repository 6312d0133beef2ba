"""One outgoing message, built once: the payload (built and validated by ``PayloadFactory``),
its JSON bytes (encoded once: MQTT and the page send the same bytes), its kind (the page's hub
and the MQTT publisher are told what it is, never parse topics), and its expiry as a number.

Inside the service times are numbers (epoch seconds); ISO 8601 text exists only in the payload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamer.payloads import encode


@dataclass(frozen=True)
class Outgoing:
    topic: str
    kind: str  # the payload's type: status, clip, recommendation
    payload: Mapping[str, Any]
    body: bytes  # the payload as JSON, encoded once
    retain: bool
    expires_at: float | None  # epoch seconds (the payload's valid_until)
    retained_copy: bool = False  # the retained copy (``.../current``) of a message just emitted

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def seq(self) -> int:
        return int(self.payload["seq"])

    def copy_to(self, topic: str) -> Outgoing:
        """The same bytes as the retained copy on ``topic`` (the latest recommendation)."""
        return dataclasses.replace(self, topic=topic, retain=True, retained_copy=True)


def outgoing(topic: str, payload: Mapping[str, Any], *, retain: bool) -> Outgoing:
    """The one way a payload becomes a message. ``payload`` comes from ``PayloadFactory`` (validated
    there; its ``expires_at`` is the numeric ``valid_until``)."""
    expires_at = getattr(payload, "expires_at", None)
    return Outgoing(topic, str(payload["type"]), payload, encode(payload), retain, expires_at)
