"""The publisher's bounded outbox: pure and synchronous.

Backlog policy: ``put`` never blocks. When the box is full, expired messages go first, then the
oldest that is not a status (statuses are rare and each carries a ``seq`` subscribers check; they
are dropped by overflow only when nothing else is left). ``peek`` hands out the oldest unexpired
message and ``ack`` removes it only after the broker acknowledged it (at-least-once: a message is
lost only by expiry or overflow, both counted). ``promote(kind)`` moves the queued messages of one
kind to the front, in their order (the publisher sends queued statuses first after a reconnect).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

STATUS = "status"


@dataclass(frozen=True)
class OutMessage:
    """One MQTT message to send. ``expires_at``: wall-clock epoch seconds (``time.time()``)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    expires_at: float | None = None
    message_id: str = ""  # the payload's ``id``, for logs and dedupe (never the payload itself)
    kind: str = ""  # the payload's ``type`` (status, clip, recommendation)
    seq: int | None = None  # the payload's ``seq`` (the publisher keeps its Last Will's seq current)

    def __post_init__(self) -> None:
        if not self.topic or any(c in self.topic for c in "+#"):
            raise ValueError(f"MQTT publish topic must be non-empty without wildcards, got {self.topic!r}")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"MQTT QoS must be 0, 1 or 2, got {self.qos}")

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Outbox:
    """FIFO of :class:`OutMessage` holding at most ``max_messages``; drops are counted by reason."""

    def __init__(self, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"outbox size must be >= 1, got {max_messages}")
        self.max_messages = max_messages
        self._items: deque[OutMessage] = deque()
        self.enqueued = 0
        self.acked = 0
        self.dropped_expired = 0
        self.dropped_overflow = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: OutMessage, now: float | None = None) -> None:
        """Append ``msg``; when full, first drop expired messages, then the oldest."""
        self.enqueued += 1
        if len(self._items) >= self.max_messages:
            self._drop_expired(time.time() if now is None else now)
        while len(self._items) >= self.max_messages:
            victim = next((m for m in self._items if m.kind != STATUS), self._items[0])
            self._items.remove(victim)
            self.dropped_overflow += 1
        self._items.append(msg)

    def promote(self, kind: str) -> int:
        """Move the queued messages of ``kind`` to the front, keeping their order; returns how many."""
        first = [m for m in self._items if m.kind == kind]
        if first:
            self._items = deque([*first, *(m for m in self._items if m.kind != kind)])
        return len(first)

    def has(self, kind: str) -> bool:
        return any(m.kind == kind for m in self._items)

    def clear(self) -> list[OutMessage]:
        """Empty the box; returns what was in it (dropped at shutdown: the caller counts it)."""
        items, self._items = list(self._items), deque()
        return items

    def peek(self, now: float | None = None) -> OutMessage | None:
        """The oldest unexpired message (left in the box), dropping expired ones at the head."""
        now = time.time() if now is None else now
        while self._items and self._items[0].expired(now):
            self._items.popleft()
            self.dropped_expired += 1
        return self._items[0] if self._items else None

    def ack(self, msg: OutMessage) -> bool:
        """Remove ``msg`` after it was published. False if it is gone already (dropped meanwhile)."""
        if self._items and self._items[0] is msg:
            self._items.popleft()
            self.acked += 1
            return True
        return False

    def _drop_expired(self, now: float) -> None:
        kept = deque(m for m in self._items if not m.expired(now))
        self.dropped_expired += len(self._items) - len(kept)
        self._items = kept

    @property
    def stats(self) -> dict[str, int]:
        return {
            "outbox": len(self._items),
            "outbox_max": self.max_messages,
            "enqueued": self.enqueued,
            "acked": self.acked,
            "dropped_expired": self.dropped_expired,
            "dropped_overflow": self.dropped_overflow,
        }
