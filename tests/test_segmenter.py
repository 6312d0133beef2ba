"""The online segmenter: exact clips on clean input, stability under noise, causality, validation."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.actions import ACTIONS
from streamer.benchmarks import segmenter as segmenter_bench
from streamer.events import ClipEnded, ClipEvent, ClipStarted
from streamer.segmenter import Segmenter, SegmenterSettings

ASP, COA, DIS, RET, CLIP = ACTIONS
Frame = tuple[float, dict[str, float]]
# A timeline oracle's view of the settings: no smoothing, only the confirmation hold.
ORACLE = SegmenterSettings(smoothing_s=0.0, confirm_s=1.5, min_clip_s=4.0)


def one_hot(action: str) -> dict[str, float]:
    return {a: float(a == action) for a in ACTIONS}


def frame_times(end_s: float, rate_hz: float, jitter: float = 0.0, seed: int = 0) -> list[float]:
    """Frames every 1/rate_hz seconds, each moved by up to +-jitter of a period (the first stays at 0)."""
    period = 1.0 / rate_hz
    offsets = np.random.default_rng(seed).uniform(-jitter, jitter, math.ceil(end_s * rate_hz)) * period
    offsets[0] = 0.0
    return [k * period + float(offset) for k, offset in enumerate(offsets) if k * period + offset < end_s]


def onsets_of(timeline: Sequence[tuple[str, float]]) -> list[float]:
    return [float(x) for x in np.cumsum([0.0] + [duration for _, duration in timeline[:-1]])]


def label_at(timeline: Sequence[tuple[str, float]], t: float) -> str:
    onsets = onsets_of(timeline)
    return timeline[int(np.searchsorted(onsets, t, side="right")) - 1][0]


def clean_frames(timeline: Sequence[tuple[str, float]], times: Sequence[float]) -> list[Frame]:
    return [(t, one_hot(label_at(timeline, t))) for t in times]


def noisy_frames(
    timeline: Sequence[tuple[str, float]], times: Sequence[float], noise: float, seed: int
) -> list[Frame]:
    """softmax(3 * one_hot(truth) + N(0, noise)) per frame."""
    rng = np.random.default_rng(seed)
    frames: list[Frame] = []
    for t in times:
        logits = 3.0 * np.array(list(one_hot(label_at(timeline, t)).values())) + rng.normal(0, noise, 5)
        probs = np.exp(logits - logits.max())
        frames.append((t, dict(zip(ACTIONS, (probs / probs.sum()).tolist(), strict=True))))
    return frames


def run(settings: SegmenterSettings, frames: Sequence[Frame], end_s: float) -> list[ClipEvent]:
    seg = Segmenter(settings)
    events: list[ClipEvent] = []
    for t, probs in frames:
        events += seg.update(t, probs)
    events += seg.finish(end_s)
    return events


def ended(events: Sequence[ClipEvent]) -> list[ClipEnded]:
    return [e for e in events if isinstance(e, ClipEnded)]


def assert_well_formed(events: Sequence[ClipEvent]) -> None:
    """Started/ended alternate, indices count from 0, clips tile the time and never repeat a label."""
    started = [e for e in events if isinstance(e, ClipStarted)]
    clips = ended(events)
    assert [type(e) for e in events[1:-1]] == [ClipEnded, ClipStarted] * (len(started) - 1)
    assert [c.index for c in clips] == list(range(len(clips))) == [s.index for s in started]
    for start, clip in zip(started, clips, strict=True):
        assert (clip.action, clip.start_s) == (start.action, start.start_s)
        assert clip.start_s <= start.detected_s <= clip.detected_s
    for before, after in itertools.pairwise(clips):
        assert before.end_s == after.start_s
        assert before.action != after.action


TIMELINE = [(DIS, 12.0), (COA, 20.0), (RET, 10.0), (DIS, 31.0), (CLIP, 15.0)]
END_S = sum(duration for _, duration in TIMELINE)


@pytest.mark.parametrize("settings", [SegmenterSettings(), ORACLE], ids=["default", "oracle"])
@pytest.mark.parametrize(("rate_hz", "jitter"), [(1.0, 0.0), (2.0, 0.0), (5.0, 0.0), (2.0, 0.3)])
def test_clean_one_hot_gives_the_true_clips(
    settings: SegmenterSettings, rate_hz: float, jitter: float
) -> None:
    events = run(settings, clean_frames(TIMELINE, frame_times(END_S, rate_hz, jitter)), END_S)
    assert_well_formed(events)
    clips = ended(events)
    assert [c.action for c in clips] == [action for action, _ in TIMELINE]
    for clip, onset in zip(clips, onsets_of(TIMELINE), strict=True):
        assert abs(clip.start_s - onset) <= (1 + jitter) / rate_hz, clip
    assert clips[-1].end_s == END_S


def test_oracle_hold_is_confirm_s() -> None:
    """Clean input without smoothing: each switch is confirmed exactly confirm_s after its onset."""
    events = run(ORACLE, clean_frames(TIMELINE, frame_times(END_S, 2.0)), END_S)
    holds = [e.detected_s - e.start_s for e in events if isinstance(e, ClipStarted)]
    assert holds == [pytest.approx(ORACLE.confirm_s)] * len(TIMELINE)


def test_default_hold_is_confirm_plus_smoothing() -> None:
    settings = SegmenterSettings()
    events = run(settings, clean_frames(TIMELINE, frame_times(END_S, 2.0)), END_S)
    holds = [e.detected_s - e.start_s for e in events if isinstance(e, ClipStarted) and e.index > 0]
    assert all(settings.confirm_s <= h <= settings.confirm_s + 2 * settings.smoothing_s + 0.5 for h in holds)


@pytest.mark.parametrize("settings", [SegmenterSettings(), ORACLE], ids=["default", "oracle"])
@pytest.mark.parametrize("flicker_s", [0.5, 1.0])
def test_flicker_shorter_than_confirm_does_not_cut(settings: SegmenterSettings, flicker_s: float) -> None:
    timeline = [(DIS, 20.0), (COA, flicker_s), (DIS, 20.0)]
    end_s = 40.0 + flicker_s
    events = run(settings, clean_frames(timeline, frame_times(end_s, 2.0)), end_s)
    assert ended(events) == [ClipEnded(0, DIS, 0.0, end_s=end_s, detected_s=end_s)]


def test_flicker_longer_than_confirm_does_cut() -> None:
    """The contrast case: the same flicker is a clip when confirm_s is shorter than it."""
    timeline = [(DIS, 20.0), (COA, 1.0), (DIS, 20.0)]
    settings = replace(ORACLE, confirm_s=0.5, min_clip_s=0.5)
    events = run(settings, clean_frames(timeline, frame_times(41.0, 2.0)), 41.0)
    assert [c.action for c in ended(events)] == [DIS, COA, DIS]


@pytest.mark.parametrize("seed", range(8))
def test_noisy_clear_switch_is_found_once(seed: int) -> None:
    timeline = [(RET, 30.0), (CLIP, 30.0)]
    frames = noisy_frames(timeline, frame_times(60.0, 2.0, jitter=0.2, seed=seed), noise=1.0, seed=seed)
    events = run(SegmenterSettings(), frames, 60.0)
    assert_well_formed(events)
    clips = ended(events)
    assert [c.action for c in clips] == [RET, CLIP]
    assert abs(clips[1].start_s - 30.0) <= 2.0
    assert clips[1].start_s < [e for e in events if isinstance(e, ClipStarted)][1].detected_s <= 36.0


def test_noisy_input_without_smoothing_or_confirmation_over_segments() -> None:
    """The contrast case: hysteresis off, the same noise cuts the stream into many clips."""
    timeline = [(RET, 30.0), (CLIP, 30.0)]
    frames = noisy_frames(timeline, frame_times(60.0, 2.0), noise=1.0, seed=0)
    bare = SegmenterSettings(smoothing_s=0.0, enter_margin=0.0, confirm_s=0.0, min_clip_s=0.0)
    assert len(ended(run(bare, frames, 60.0))) > 2


def test_min_clip_s_holds_a_short_clip_until_it_is_long_enough() -> None:
    """Coagulation leads for only 3 s; the next switch waits until the clip has lasted min_clip_s."""
    timeline = [(DIS, 10.0), (COA, 3.0), (RET, 20.0)]
    settings = SegmenterSettings(smoothing_s=0.0, confirm_s=0.5, min_clip_s=8.0)
    events = run(settings, clean_frames(timeline, frame_times(33.0, 2.0)), 33.0)
    clips = ended(events)
    assert [c.action for c in clips] == [DIS, COA, RET]
    assert clips[1].start_s == 10.0
    assert clips[1].end_s == clips[2].start_s == 18.0  # onset pushed to start + min_clip_s
    assert [e.detected_s for e in events if isinstance(e, ClipStarted)][2] == 18.0


@pytest.mark.parametrize("min_clip_s", [0.0, 3.0, 8.0])
def test_no_cut_clip_is_shorter_than_min_clip_s(min_clip_s: float) -> None:
    rng = np.random.default_rng(1)
    timeline = [
        (ACTIONS[int(i)], float(d)) for i, d in zip(rng.permutation(5), rng.uniform(2, 12, 5), strict=True)
    ]
    end_s = sum(d for _, d in timeline)
    frames = noisy_frames(timeline, frame_times(end_s, 5.0, jitter=0.3), noise=2.5, seed=1)
    settings = SegmenterSettings(confirm_s=0.5, min_clip_s=min_clip_s)
    events = run(settings, frames, end_s)
    assert_well_formed(events)
    cut = ended(events)[:-1]  # the last clip ends with the stream, not by a switch
    assert len(cut) >= 2
    assert all(c.end_s - c.start_s >= min_clip_s - 1e-9 for c in cut)


def test_events_are_causal() -> None:
    """Two streams that share their first 25 s give the same events up to t = 25 s."""
    times = frame_times(50.0, 2.0, jitter=0.2)
    a = noisy_frames([(ASP, 20.0), (COA, 30.0)], times, noise=1.5, seed=3)
    b = noisy_frames([(ASP, 20.0), (COA, 5.0), (DIS, 25.0)], times, noise=1.5, seed=3)
    shared = sum(t <= 25.0 for t in times)
    assert a[:shared] == b[:shared] and a[shared:] != b[shared:]
    seg_a, seg_b = Segmenter(), Segmenter()
    prefix_a = [seg_a.update(t, p) for t, p in a if t <= 25.0]
    prefix_b = [seg_b.update(t, p) for t, p in b if t <= 25.0]
    assert prefix_a == prefix_b
    assert any(prefix_a)  # the shared prefix does produce events (clip 0 and the switch at 20 s)
    rest_a = [seg_a.update(t, p) for t, p in a if t > 25.0]
    rest_b = [seg_b.update(t, p) for t, p in b if t > 25.0]
    assert rest_a != rest_b


def test_irregular_spacing_smooths_by_elapsed_time() -> None:
    """The EMA weight comes from dt: regular and irregular frames reach the same smoothed value."""
    tau = 2.0
    for times in ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.1, 2.5, 3.9, 4.0]):
        seg = Segmenter(SegmenterSettings(smoothing_s=tau))
        seg.update(times[0], one_hot(DIS))
        for t in times[1:]:
            seg.update(t, one_hot(COA))
        assert seg.smoothed[COA] == pytest.approx(1.0 - math.exp(-4.0 / tau))
        assert seg.smoothed[DIS] == pytest.approx(math.exp(-4.0 / tau))


def test_first_clip_waits_for_min_confidence() -> None:
    seg = Segmenter(SegmenterSettings(smoothing_s=0.0, confirm_s=0.0, min_confidence=0.6))
    low = {DIS: 0.55, COA: 0.2, RET: 0.25}
    assert seg.update(0.0, low) == [] and seg.current is None
    assert seg.update(0.5, {DIS: 0.7, COA: 0.3}) == [ClipStarted(0, DIS, start_s=0.0, detected_s=0.5)]


def test_finish_ends_the_open_clip() -> None:
    seg = Segmenter(ORACLE)
    for t in (0.0, 1.0, 2.0):
        seg.update(t, one_hot(RET))
    assert seg.current == ClipStarted(0, RET, start_s=0.0, detected_s=2.0)
    assert seg.finish(2.0) == [ClipEnded(0, RET, start_s=0.0, end_s=2.0, detected_s=2.0)]
    assert seg.current is None
    with pytest.raises(RuntimeError, match="finished"):
        seg.update(3.0, one_hot(RET))


def test_finish_without_a_clip_and_before_the_last_frame() -> None:
    assert Segmenter().finish(0.0) == []
    seg = Segmenter()
    seg.update(5.0, one_hot(RET))
    with pytest.raises(ValueError, match=r"t=4\.0"):
        seg.finish(4.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("smoothing_s", -1.0),
        ("smoothing_s", float("nan")),
        ("enter_margin", 1.0),
        ("enter_margin", -0.1),
        ("confirm_s", float("inf")),
        ("confirm_s", -0.5),
        ("min_clip_s", -2.0),
        ("min_confidence", 0.0),
        ("min_confidence", 1.5),
        ("min_confidence", "0.5"),
        ("compensate_lag", "yes"),
    ],
)
def test_bad_settings_raise_naming_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field}.*{re.escape(repr(value))}"):
        SegmenterSettings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("t_s", [1.0, 0.5, float("nan")])
def test_time_must_increase(t_s: float) -> None:
    seg = Segmenter()
    seg.update(1.0, one_hot(ASP))
    with pytest.raises(ValueError, match=re.escape(repr(t_s))):
        seg.update(t_s, one_hot(ASP))


@pytest.mark.parametrize(
    ("probs", "named"), [({"Suturing": 0.5}, "Suturing"), ({ASP: 1.5}, "1.5"), ({ASP: float("nan")}, "nan")]
)
def test_bad_probabilities_raise_naming_the_value(probs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Segmenter().update(0.0, probs)


def test_bench_runs_and_the_oracle_scenario_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--videos", "2", "--clips", "4", "--only-default", "--json", str(out)]
    assert segmenter_bench.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    clean = results["clean one-hot (oracle)"]["default"]
    assert clean["switches_missed"] == clean["switches_false"] == 0
    assert clean["clips_found"] == clean["clips_true"] == 8
    assert clean["delay_p50_s"] >= SegmenterSettings().confirm_s
    assert set(results) == {s.name for s in segmenter_bench.scenarios(2.0, 1.0)}
