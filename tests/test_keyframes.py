"""The keyframe sampler: bounded, spread over the clip as it grows, downscaled once, no pixels in reprs."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.frames import resize_rgb
from streamer.keyframes import Keyframe, KeyframeSampler, KeyframeSettings


def _image(value: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)


def _feed(sampler: KeyframeSampler, start_s: float, end_s: float, fps: float = 25.0) -> int:
    kept = 0
    n = round((end_s - start_s) * fps)
    for i in range(n):
        kept += sampler.offer(start_s + i / fps, _image(i))
    return kept


@pytest.mark.parametrize("limit", [2, 3, 5, 8])
@pytest.mark.parametrize("clip_s", [3.0, 17.0, 46.0, 300.0])
def test_bounded_and_spread_over_the_whole_clip(limit: int, clip_s: float) -> None:
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=limit, size=(32, 24)))
    sampler.start_clip(0, 10.0)
    admitted = _feed(sampler, 10.0, 10.0 + clip_s)
    frames = sampler.keyframes()
    times = [k.pts_s for k in frames]
    assert 1 <= len(frames) <= limit
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] == pytest.approx(10.0)  # the clip's start ...
    assert times[-1] >= 10.0 + clip_s - 1.0 - 1e-6  # ... to (within one admission interval) now
    # one resize per admitted frame, at most one per second of stream, never one per decoded frame
    assert admitted <= clip_s + 1
    if clip_s >= 2 * limit:  # a long clip: at least half the slots used, spread evenly
        assert len(frames) >= limit // 2 + (1 if limit > 2 else 0)
        gaps = np.diff(times)
        ideal = clip_s / (len(frames) - 1)
        assert gaps.max() <= 2.5 * ideal
    assert all(k.image.shape == (24, 32, 3) for k in frames)
    assert sampler.nbytes <= (sampler.settings.max_bytes or 0)


def test_set_keeps_covering_the_clip_as_it_grows() -> None:
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=5, size=(16, 16)))
    sampler.start_clip(3, 0.0)
    spans = []
    for until in (4.0, 10.0, 40.0, 120.0):
        _feed(sampler, spans[-1][1] + 0.04 if spans else 0.0, until, fps=25)
        frames = sampler.keyframes()
        spans.append((frames[0].pts_s, frames[-1].pts_s))
        assert len(frames) <= 5
    assert all(first == 0.0 for first, _ in spans)
    assert [last for _, last in spans] == sorted(last for _, last in spans)
    assert spans[-1][1] > 118.0


def test_version_changes_only_when_the_set_does() -> None:
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=4, size=None, min_interval_s=1.0))
    assert not sampler.offer(0.0, _image(0))  # no clip yet
    sampler.start_clip(0, 5.0)
    v = sampler.version
    assert not sampler.offer(4.0, _image(1))  # before the clip's start
    assert sampler.offer(5.0, _image(2)) and sampler.version == v + 1
    assert not sampler.offer(5.5, _image(3)) and sampler.version == v + 1  # not due yet
    assert sampler.offer(6.0, _image(4)) and sampler.version == v + 2


def test_new_clip_keeps_frames_after_its_onset_only() -> None:
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=8, size=None))
    sampler.start_clip(0, 0.0)
    _feed(sampler, 0.0, 12.0, fps=10)
    sampler.start_clip(1, 10.5)  # confirmed at 12 s, onset estimated at 10.5 s
    assert sampler.clip_index == 1
    assert [k.pts_s for k in sampler.keyframes()] == pytest.approx([11.0])
    sampler.start_clip(2, 30.0)
    assert sampler.keyframes() == ()


def test_one_keyframe_is_the_newest() -> None:
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=1, size=None))
    sampler.start_clip(0, 0.0)
    _feed(sampler, 0.0, 9.5, fps=5)
    (only,) = sampler.keyframes()
    assert only.pts_s == pytest.approx(9.0)


def test_downscaled_once_owning_its_pixels_and_never_in_reprs() -> None:
    big = np.arange(480 * 854 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 854, 3)
    sampler = KeyframeSampler(KeyframeSettings(max_keyframes=2, size=(224, 224)))
    sampler.start_clip(0, 0.0)
    sampler.offer(0.0, big)
    (kf,) = sampler.keyframes()
    assert kf.image.shape == (224, 224, 3)
    assert np.array_equal(kf.image, resize_rgb(big, (224, 224)))
    assert "array" not in repr(kf) and "image" not in repr(kf)
    # same size: no resize, but a view into a larger buffer is copied (the buffer is not kept alive)
    same = KeyframeSampler(KeyframeSettings(max_keyframes=2, size=(32, 32)))
    same.start_clip(0, 0.0)
    buffer = np.zeros((64, 64, 3), dtype=np.uint8)
    same.offer(0.0, buffer[:32, :32])
    assert same.keyframes()[0].image.base is None


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_keyframes"):
        KeyframeSettings(max_keyframes=0)
    with pytest.raises(ValueError, match="size"):
        KeyframeSettings(size=(4, 4))
    with pytest.raises(ValueError, match="min_interval_s"):
        KeyframeSettings(min_interval_s=0)
    assert KeyframeSettings(max_keyframes=8, size=(224, 224)).max_bytes == 8 * 224 * 224 * 3


def test_keyframe_is_a_plain_record() -> None:
    assert Keyframe(1.5, _image(0)) == Keyframe(1.5, _image(9))  # compared by time only
