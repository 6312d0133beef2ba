"""Online action segmentation: per-frame action probabilities in, clip events out.

Pure, synchronous and causal: the events returned by ``update(t, ...)`` depend only on the
inputs up to ``t``. Three mechanisms keep clips stable under a noisy recognizer:

1. smoothing: an exponential moving average of each action's probability with time constant
   ``smoothing_s`` stream seconds; the weight of a new frame comes from the time since the last
   one (``alpha = 1 - exp(-dt / smoothing_s)``), so irregular frame spacing is handled;
2. hysteresis: a challenger action must beat the current clip's smoothed probability by
   ``enter_margin`` continuously for ``confirm_s`` stream seconds before a switch is confirmed;
3. minimum length: no clip shorter than ``min_clip_s`` is ever cut.

The first clip starts once one action has led all others by ``enter_margin`` for ``confirm_s``
and its smoothed probability has reached ``min_confidence``.

Timing of a switch: the new clip's ``start_s`` is its estimated onset, the stream time at which
the challenger first started to lead the current action (continuously up to the confirmation),
backdated by the smoothing filter's known lag: after a step from one action to another, two
smoothed probabilities cross ``smoothing_s * ln 2`` seconds after the step, whatever their
levels. ``detected_s`` is the stream time of the frame that confirmed the switch, so
``detected_s - start_s`` is the segmentation hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from planner.actions import ACTIONS
from streamer.events import ClipEnded, ClipEvent, ClipStarted

__all__ = ["ClipEvent", "Segmenter", "SegmenterSettings"]

#: Tolerance of time comparisons (frame times built by repeated addition drift by ~1e-15 s).
_TIME_EPS = 1e-9


def _check_number(name: str, value: object, low: float, high: float, *, high_open: bool = False) -> None:
    """Raise ``ValueError`` naming the field unless ``low <= value <= high`` (or ``< high``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"SegmenterSettings.{name} must be a finite number, got {value!r}")
    too_high = value >= high if high_open else value > high
    if value < low or too_high:
        upper = f"< {high}" if high_open else f"<= {high}"
        raise ValueError(f"SegmenterSettings.{name} must be >= {low} and {upper}, got {value!r}")


@dataclass(frozen=True)
class SegmenterSettings:
    """Tuning of the segmenter; defaults measured with ``python -m streamer.benchmarks.segmenter``.

    They suit a recognizer at 1-5 Hz on clips that last at least 10 s (median 46 s). For a timeline
    oracle (clean one-hot input) ``smoothing_s=0`` removes the smoothing delay: the hold is then
    ``confirm_s``, up to one frame.
    """

    smoothing_s: float = 1.5
    """EMA time constant in stream seconds; 0 = no smoothing."""
    enter_margin: float = 0.2
    """A challenger must beat the current clip's smoothed probability by this much ..."""
    confirm_s: float = 1.5
    """... continuously for this long (stream seconds) before a switch is confirmed."""
    min_clip_s: float = 4.0
    """No clip shorter than this is cut: a switch's onset is never earlier than start + min_clip_s."""
    min_confidence: float = 0.5
    """The first clip starts only when one action's smoothed probability reaches this (and that action
    has led all others by ``enter_margin`` for ``confirm_s``, as a challenger must)."""
    compensate_lag: bool = True
    """Backdate onsets by the smoothing lag (``smoothing_s * ln 2``); False: the raw crossing time."""

    def __post_init__(self) -> None:
        _check_number("smoothing_s", self.smoothing_s, 0.0, 60.0)
        _check_number("enter_margin", self.enter_margin, 0.0, 1.0, high_open=True)
        _check_number("confirm_s", self.confirm_s, 0.0, 60.0)
        _check_number("min_clip_s", self.min_clip_s, 0.0, 600.0)
        _check_number("min_confidence", self.min_confidence, 0.0, 1.0)
        if self.min_confidence <= 0.0:
            raise ValueError(f"SegmenterSettings.min_confidence must be > 0, got {self.min_confidence!r}")
        if not isinstance(self.compensate_lag, bool):
            raise ValueError(f"SegmenterSettings.compensate_lag must be a bool, got {self.compensate_lag!r}")

    @property
    def lag_s(self) -> float:
        """How far onsets are backdated: the smoothed probabilities' crossing delay after a step."""
        return self.smoothing_s * math.log(2.0) if self.compensate_lag else 0.0


@dataclass
class _Lead:
    """A challenger that currently leads the open clip's action."""

    since_s: float
    """First frame of the current uninterrupted lead."""
    margin_since_s: float | None = None
    """First frame of the current uninterrupted lead by at least ``enter_margin``."""


def _validated_probs(t_s: float, probs: Mapping[str, float]) -> list[float]:
    """Probabilities in canonical action order; missing actions count 0; anything else raises."""
    unknown = sorted(set(probs) - set(ACTIONS))
    if unknown:
        raise ValueError(f"probabilities at t={t_s} name unknown actions {unknown}; known: {list(ACTIONS)}")
    values = [float(probs.get(action, 0.0)) for action in ACTIONS]
    for action, value in zip(ACTIONS, values, strict=True):
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"probability of {action!r} at t={t_s} must be in [0, 1], got {value!r}")
    return values


def _argmax(values: list[float]) -> int:
    """Index of the largest value; ties go to the first in canonical order."""
    return max(range(len(values)), key=values.__getitem__)


class Segmenter:
    """Turns a stream of per-frame probabilities into ``ClipStarted`` / ``ClipEnded`` events.

    >>> seg = Segmenter(SegmenterSettings(smoothing_s=0, confirm_s=1, min_clip_s=0))
    >>> seg.update(0.0, {"Dissection": 1.0}), seg.update(1.0, {"Dissection": 1.0})
    ([], [ClipStarted(index=0, action='Dissection', start_s=0.0, detected_s=1.0)])
    >>> seg.update(2.0, {"Coagulation": 1.0})
    []
    >>> for event in seg.update(3.0, {"Coagulation": 1.0}) + seg.finish(4.0):
    ...     print(event)
    ClipEnded(index=0, action='Dissection', start_s=0.0, end_s=2.0, detected_s=3.0)
    ClipStarted(index=1, action='Coagulation', start_s=2.0, detected_s=3.0)
    ClipEnded(index=1, action='Coagulation', start_s=2.0, end_s=4.0, detected_s=4.0)
    """

    def __init__(self, settings: SegmenterSettings | None = None) -> None:
        self.settings = settings if settings is not None else SegmenterSettings()
        self._smoothed: list[float] | None = None
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._current: ClipStarted | None = None
        self._finished = False
        # before the first clip: the top smoothed action and since when it has led the others
        self._top: tuple[int, _Lead] | None = None
        # while a clip is open: the actions that lead it, by index in ACTIONS
        self._leads: dict[int, _Lead] = {}

    @property
    def current(self) -> ClipStarted | None:
        """The open clip, or None before the first clip starts (and after ``finish``)."""
        return self._current

    @property
    def smoothed(self) -> dict[str, float]:
        """The smoothed probabilities after the last frame (empty before the first)."""
        return dict(zip(ACTIONS, self._smoothed, strict=True)) if self._smoothed is not None else {}

    def update(self, t_s: float, probs: Mapping[str, float]) -> list[ClipEvent]:
        """Feed one frame's probabilities at stream time ``t_s`` (strictly increasing)."""
        self._check_time(t_s, allow_equal=False)
        values = _validated_probs(t_s, probs)
        self._smooth(t_s, values)
        self._last_t = t_s
        if self._current is None:
            return self._maybe_start_first(t_s)
        return self._maybe_switch(t_s, self._current)

    def finish(self, t_s: float) -> list[ClipEnded]:
        """End of stream at ``t_s`` (not before the last frame): end the open clip, if any."""
        self._check_time(t_s, allow_equal=True)
        self._finished = True
        clip, self._current = self._current, None
        if clip is None:
            return []
        return [ClipEnded(clip.index, clip.action, clip.start_s, end_s=t_s, detected_s=t_s)]

    # -- steps -------------------------------------------------------------------------------

    def _check_time(self, t_s: float, *, allow_equal: bool) -> None:
        if self._finished:
            raise RuntimeError(f"segmenter already finished at t={self._last_t}; got t={t_s}")
        if isinstance(t_s, bool) or not isinstance(t_s, int | float) or not math.isfinite(t_s):
            raise ValueError(f"stream time must be a finite number, got {t_s!r}")
        last = self._last_t
        if last is not None and (t_s < last or (t_s == last and not allow_equal)):
            raise ValueError(f"stream time must increase: got t={t_s!r} after t={last!r}")

    def _smooth(self, t_s: float, values: list[float]) -> None:
        if self._smoothed is None or self._last_t is None:
            self._smoothed = values
            self._first_t = t_s
            return
        tau = self.settings.smoothing_s
        alpha = 1.0 if tau == 0.0 else -math.expm1(-(t_s - self._last_t) / tau)
        self._smoothed = [s + alpha * (v - s) for s, v in zip(self._smoothed, values, strict=True)]

    def _maybe_start_first(self, t_s: float) -> list[ClipEvent]:
        """Start clip 0 once one action led all others by the margin for ``confirm_s`` and is confident."""
        assert self._smoothed is not None and self._first_t is not None
        smoothed = self._smoothed
        top = _argmax(smoothed)
        if self._top is None or self._top[0] != top:
            self._top = (top, _Lead(since_s=t_s))
        lead = self._top[1]
        runner_up = max(p for action, p in enumerate(smoothed) if action != top)
        self._track_margin(lead, t_s, smoothed[top] - runner_up)
        if smoothed[top] < self.settings.min_confidence or not self._confirmed(lead, t_s):
            return []
        start_s = max(self._first_t, lead.since_s - self.settings.lag_s)
        self._current = ClipStarted(index=0, action=ACTIONS[top], start_s=start_s, detected_s=t_s)
        return [self._current]

    def _maybe_switch(self, t_s: float, clip: ClipStarted) -> list[ClipEvent]:
        self._track_leads(t_s, ACTIONS.index(clip.action))
        challenger = self._confirmed_challenger(t_s, clip)
        if challenger is None:
            return []
        lead = self._leads[challenger]
        onset = max(lead.since_s - self.settings.lag_s, clip.start_s + self.settings.min_clip_s)
        ended = ClipEnded(clip.index, clip.action, clip.start_s, end_s=onset, detected_s=t_s)
        self._current = ClipStarted(clip.index + 1, ACTIONS[challenger], start_s=onset, detected_s=t_s)
        self._leads = {}
        return [ended, self._current]

    def _track_leads(self, t_s: float, current: int) -> None:
        """Update, for every other action, since when it leads the current one (by the margin)."""
        assert self._smoothed is not None
        held = self._smoothed[current]
        for action, p in enumerate(self._smoothed):
            if action == current or p <= held:
                self._leads.pop(action, None)
                continue
            self._track_margin(self._leads.setdefault(action, _Lead(since_s=t_s)), t_s, p - held)

    def _track_margin(self, lead: _Lead, t_s: float, advantage: float) -> None:
        if advantage < self.settings.enter_margin:
            lead.margin_since_s = None
        elif lead.margin_since_s is None:
            lead.margin_since_s = t_s

    def _confirmed(self, lead: _Lead, t_s: float) -> bool:
        """The lead has held by the margin for ``confirm_s``."""
        since = lead.margin_since_s
        return since is not None and t_s - since >= self.settings.confirm_s - _TIME_EPS

    def _confirmed_challenger(self, t_s: float, clip: ClipStarted) -> int | None:
        """The strongest action that beat the clip for ``confirm_s``, once the clip may be cut."""
        if t_s - clip.start_s < self.settings.min_clip_s - _TIME_EPS:
            return None
        confirmed = sorted(action for action, lead in self._leads.items() if self._confirmed(lead, t_s))
        if not confirmed:
            return None
        assert self._smoothed is not None
        smoothed = self._smoothed
        return max(confirmed, key=lambda action: smoothed[action])
