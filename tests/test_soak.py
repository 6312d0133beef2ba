"""Soak: 100,000 frames through the pipeline (marked slow: `pytest -m slow`)."""

import pytest

from streamer.benchmarks.soak import soak


@pytest.mark.slow
async def test_100k_frames_memory_and_latency_stay_flat() -> None:
    result = await soak(100_000)
    assert result["frames_processed"] == 100_000
    assert result["rss_growth"] <= 0.10, result["rss_mb"]
    # the stage's own work per frame is ~0.05 ms: 10% of it is below the timer noise, so allow
    # 0.05 ms besides (a leak, e.g. a growing list scanned per frame, shows as several-fold growth)
    first, last = result["frame_p99_ms"]["first_10pct"], result["frame_p99_ms"]["last_10pct"]
    assert last <= max(1.10 * first, first + 0.05), result
    assert result["mqtt"]["dropped_overflow"] == 0
