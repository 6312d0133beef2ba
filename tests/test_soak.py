"""Soak: 100,000 frames through the pipeline (marked slow: `pytest -m slow`)."""

import pytest

from streamer.benchmarks.soak import soak


@pytest.mark.slow
async def test_100k_frames_memory_and_latency_stay_flat() -> None:
    result = await soak(100_000)
    assert result["frames_processed"] == 100_000
    assert result["rss_growth"] <= 0.10, result["rss_mb"]
    assert result["frame_p99_ms"]["last_10pct"] <= 1.10 * result["frame_p99_ms"]["first_10pct"], result
    assert result["mqtt"]["dropped_overflow"] == 0
