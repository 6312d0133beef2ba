"""Soak: 100,000 frames through the whole pipeline (MQTT included); memory and latency must stay flat.

``python -m streamer.benchmarks.soak [--frames N] [--json OUT]``. Every frame goes through the recognizer
(timeline oracle at the frame rate) and the segmenter; a clip switch every 10 s of stream time
gives a recommendation each time, published to the embedded broker. It compares resident memory
and p99 latency over the first and the last 10% of the frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from planner.actions import ACTIONS
from planner.logs import configure_logging
from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource


def _planner() -> Any:
    from planner.engines import create_engine
    from planner.planner import Planner
    from planner.prior import packaged_prior

    prior = packaged_prior()
    return Planner(create_engine("prior", prior), prior)


async def soak(frames: int, fps: float = 25.0, clip_s: float = 10.0) -> dict[str, Any]:
    duration = frames / fps
    rows = [(i * clip_s, ACTIONS[i % len(ACTIONS)]) for i in range(int(duration // clip_s) + 1)]
    rows = [r for r in rows if r[0] < duration]
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        timeline = Path(tmp) / "soak.csv"
        timeline.write_text("start_s,action\n" + "".join(f"{s},{a}\n" for s, a in rows))
        cfg = ServiceConfig(
            streams=(StreamConfig(room="soak", source="synthetic"),),
            recognizer=f"timeline:{timeline}",
            recognizer_rate_hz=fps,
            realtime=False,
            mqtt=MqttConfig(broker=None, protocol="3.1.1"),
        )

        def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
            return SyntheticSource(rows, duration_s=duration, fps=fps, size=(16, 16), realtime=False)

        service = Service(cfg, planner_factory=_planner, source_factory=source)
        marks: dict[str, Any] = {}

        async def watch() -> None:
            await service.started.wait()
            pipeline = service.runs[0].pipeline
            while pipeline.state.frames_processed < frames // 10:
                await asyncio.sleep(0.05)
            marks["first_rss_mb"] = process.memory_info().rss / 2**20
            marks["first_frame_ms"] = pipeline.latency.values("frame")[: frames // 10]
            marks["first_rec_ms"] = pipeline.latency.values("total")

        t0 = time.perf_counter()
        watcher = asyncio.create_task(watch())
        (state,) = await service.run(exit_when_done=True)
        wall = time.perf_counter() - t0
        await asyncio.wait_for(watcher, 1)
        pipeline = service.runs[0].pipeline
        last_frames = pipeline.latency.values("frame")[-(frames // 10) :]
        last_recs = pipeline.latency.values("total")[-max(1, len(marks["first_rec_ms"])) :]

    def p99(values: list[float]) -> float:
        return float(np.percentile(values, 99)) if values else float("nan")

    def first_last(first: list[float], last: list[float]) -> dict[str, float]:
        return {"first_10pct": round(p99(first), 3), "last_10pct": round(p99(last), 3)}

    rss_end = process.memory_info().rss / 2**20
    result = {
        "frames_processed": state.frames_processed,
        "recommendations": state.recommendations,
        "wall_s": round(wall, 1),
        "rss_mb": {"at_10pct": round(marks["first_rss_mb"], 1), "at_end": round(rss_end, 1)},
        "frame_p99_ms": first_last(marks["first_frame_ms"], last_frames),
        "recommendation_p99_ms": first_last(marks["first_rec_ms"], last_recs),
        "mqtt": service.runs[0].publisher.stats,
    }
    result["rss_growth"] = round(result["rss_mb"]["at_end"] / result["rss_mb"]["at_10pct"] - 1, 4)
    result["frame_p99_change"] = round(
        result["frame_p99_ms"]["last_10pct"] / result["frame_p99_ms"]["first_10pct"] - 1, 4
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.benchmarks.soak")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--json", type=Path, dest="json_out")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    result = asyncio.run(soak(args.frames))
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
