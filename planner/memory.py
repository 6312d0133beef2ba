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
    #: start second of each distant clip (same length as ``distant``), or ``()`` when unknown;
    #: the learned planner's time features read it (with ``near.start_s``)
    distant_starts: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.max_distant < 1:
            raise ValueError(f"max_distant must be >= 1, got {self.max_distant}")
        if self.max_keyframes < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {self.max_keyframes}")
        for label in self.distant:
            if not is_label(label):
                raise UnknownActionError(label, "distant history")
        if self.distant_starts and len(self.distant_starts) != len(self.distant):
            raise ValueError(
                f"distant_starts must give one start per distant clip ({len(self.distant)}), "
                f"got {len(self.distant_starts)}"
            )

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
        starts: Sequence[float] = (),
    ) -> NHFMemory:
        """Build a memory as a CholecT50-SAP planning sample states it.

        ``starts``: the start second of each history clip (distant ones, then the nearest), as a
        sample's ``History`` gives them; empty when unknown."""
        overflow = max(0, len(distant) - max_distant)
        n_history = len(distant) + (1 if nearest else 0)
        if starts and len(starts) != n_history:
            raise ValueError(f"starts must give one start per history clip ({n_history}), got {len(starts)}")
        near = None
        if nearest:
            near = NearClip(
                nearest,
                start_s=float(starts[-1]) if starts else 0.0,
                caption=caption,
                keyframes=_evenly(tuple(keyframes), max_keyframes),
            )
        distant_starts = tuple(float(s) for s in starts[: len(distant)])[overflow:] if starts else ()
        return cls(
            distant=tuple(distant[overflow:]),
            near=near,
            max_distant=max_distant,
            max_keyframes=max_keyframes,
            dropped_distant=overflow,
            distant_starts=distant_starts,
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
        starts = self.distant_starts
        dropped = self.dropped_distant
        if self.near is not None:
            # start times stay aligned with labels only while every start so far is known
            starts = (*starts, self.near.start_s) if len(starts) == len(distant) else ()
            distant = (*distant, self.near.action)
            if len(distant) > self.max_distant:
                dropped += len(distant) - self.max_distant
                distant = distant[-self.max_distant :]
                starts = starts[-self.max_distant :]
        return replace(
            self,
            distant=distant,
            near=NearClip(action, start_s),
            dropped_distant=dropped,
            distant_starts=starts,
        )

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
