"""Near-History Focus Memory (NHFM) of the LLM-SAP paper: pure, immutable, bounded.

While clip t runs, the planner predicts clip t+1 from
- the distant history a_1..a_{t-1} (labels only), and
- the near history ⟨v_t or C_t, a_t⟩: the current clip's keyframes (DirNHFM) or its
  caption (IndirNHFM), and its label.

Every update returns a new memory; nothing is shared or mutated, so the streamer can hand a
snapshot to a planning thread while the next clip event arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from planner.actions import is_label
from planner.exceptions import UnknownActionError

#: Default bounds: a cholecystectomy has at most a few dozen clips; 64 labels is plenty.
DEFAULT_MAX_DISTANT = 64
DEFAULT_MAX_KEYFRAMES = 8


@dataclass(frozen=True)
class NearClip:
    """The current clip: its label, its start (stream seconds) and what the planner sees of it.

    ``keyframes`` are opaque references (file paths, or arrays held by the streamer); the
    memory never looks inside them.
    """

    action: str
    start_s: float = 0.0
    caption: str | None = None
    keyframes: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        if not is_label(self.action):
            raise UnknownActionError(self.action, "near clip action")


@dataclass(frozen=True)
class NHFMemory:
    """Distant labels plus the near clip, bounded by ``max_distant`` and ``max_keyframes``."""

    distant: tuple[str, ...] = ()
    near: NearClip | None = None
    max_distant: int = DEFAULT_MAX_DISTANT
    max_keyframes: int = DEFAULT_MAX_KEYFRAMES
    dropped_distant: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.max_distant < 1:
            raise ValueError(f"max_distant must be >= 1, got {self.max_distant}")
        if self.max_keyframes < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {self.max_keyframes}")
        for label in self.distant:
            if not is_label(label):
                raise UnknownActionError(label, "distant history")

    @classmethod
    def from_history(
        cls,
        distant: Sequence[str],
        nearest: str | None,
        *,
        caption: str | None = None,
        keyframes: Sequence[object] = (),
        max_distant: int = DEFAULT_MAX_DISTANT,
        max_keyframes: int = DEFAULT_MAX_KEYFRAMES,
    ) -> NHFMemory:
        """Build a memory as a CholecT50-SAP planning sample states it."""
        overflow = max(0, len(distant) - max_distant)
        near = None
        if nearest:
            near = NearClip(nearest, caption=caption, keyframes=_evenly(tuple(keyframes), max_keyframes))
        return cls(
            distant=tuple(distant[overflow:]),
            near=near,
            max_distant=max_distant,
            max_keyframes=max_keyframes,
            dropped_distant=overflow,
        )

    @property
    def current_action(self) -> str | None:
        """a_t, the label of the clip that runs now (``None`` before the first clip)."""
        return self.near.action if self.near else None

    @property
    def history(self) -> tuple[str, ...]:
        """a_1..a_t: distant labels followed by the current one."""
        return (*self.distant, self.near.action) if self.near else self.distant

    def start_clip(self, action: str, start_s: float = 0.0) -> NHFMemory:
        """A new clip started: the current clip's label moves to the distant history."""
        distant = self.distant
        dropped = self.dropped_distant
        if self.near is not None:
            distant = (*distant, self.near.action)
            if len(distant) > self.max_distant:
                dropped += len(distant) - self.max_distant
                distant = distant[-self.max_distant :]
        return replace(self, distant=distant, near=NearClip(action, start_s), dropped_distant=dropped)

    def with_caption(self, caption: str) -> NHFMemory:
        """IndirNHFM: attach the caption C_t of the current clip."""
        if self.near is None:
            return self
        return replace(self, near=replace(self.near, caption=caption))

    def with_keyframes(self, keyframes: Sequence[object]) -> NHFMemory:
        """DirNHFM: attach the current clip's keyframes, thinned evenly to ``max_keyframes``."""
        if self.near is None:
            return self
        kept = _evenly(tuple(keyframes), self.max_keyframes)
        return replace(self, near=replace(self.near, keyframes=kept))


def _evenly(items: tuple[object, ...], limit: int) -> tuple[object, ...]:
    """At most ``limit`` items spread evenly, first and last kept."""
    if len(items) <= limit:
        return items
    if limit == 1:
        return (items[-1],)
    step = (len(items) - 1) / (limit - 1)
    return tuple(items[round(i * step)] for i in range(limit))
