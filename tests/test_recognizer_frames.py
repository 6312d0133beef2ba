"""One resize for recognizer frames: training sees exactly the pixels the live recognizer sees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from streamer.frames import resize_rgb
from streamer.recognizers.frame_model import DECODE_SIZE, preprocess, recognizer_frame
from streamer.sources.video import VideoSource
from training.recognizer_data import load_image, sample_video

SIZE = 112


async def _served_frames(video: Path, times: list[float]) -> dict[float, np.ndarray]:
    """Frames as the service decodes them (frame_size 224), at the given stream times."""
    source = VideoSource(str(video), output_size=(DECODE_SIZE, DECODE_SIZE))
    await source.start()
    out: dict[float, np.ndarray] = {}
    try:
        while (frame := await source.next_frame()) is not None:
            for t in times:
                if abs(frame.pts_s - t) < 1e-6:
                    out[t] = frame.image
            if len(out) == len(times):
                break
    finally:
        await source.stop()
    return out


def test_training_frames_equal_what_the_live_recognizer_sees(clips_dir: Path) -> None:
    video = sorted(clips_dir.glob("*.mp4"))[0]
    train_images, times = sample_video(str(video), SIZE, sample_hz=1.0)
    served = asyncio.run(_served_frames(video, times[:6]))
    assert len(served) == 6
    for t, image in zip(times[:6], train_images[:6], strict=False):
        live = recognizer_frame(served[t], SIZE)
        assert live.shape == (SIZE, SIZE, 3)
        assert np.array_equal(live, image), f"frame at {t} s differs"
    # and the tensor the model gets is the same whether the frame comes at 224 or already at 112
    a = preprocess([served[times[0]]], SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    b = preprocess([train_images[0]], SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert a.shape == (1, 3, SIZE, SIZE) and bool((a == b).all())


def test_stills_go_through_the_same_two_steps(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(0)
    still = (rng.random((480, 854, 3)) * 255).astype(np.uint8)
    Image.fromarray(still).save(tmp_path / "f.png")
    expected = recognizer_frame(resize_rgb(still, (DECODE_SIZE, DECODE_SIZE)), SIZE)
    assert np.array_equal(load_image(tmp_path / "f.png", SIZE), expected)
