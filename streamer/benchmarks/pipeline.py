"""Streaming benchmarks that print numbers (ratios measured in one run).

``python -m streamer.benchmarks.pipeline replay [--json OUT]``: replay throughput on each real clip as a ratio
to PyAV decode-only speed of the same clip, measured back to back in this process.

``python -m streamer.benchmarks.pipeline live [--loops N] [--json OUT]``: the three real clips as three live
rooms at once (realtime pacing, 25 fps H.264 decode each), the prior planner, the embedded
broker: capture → MQTT outbox latency from the payload stamps, and capture → subscriber
delivery measured by a subscriber, p50/p99; the segmentation hold is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from planner.logs import configure_logging
from streamer.benchmarks.decode import decode_only_fps
from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.latency import percentiles
from streamer.replay import replay

DATA_DIR = Path(os.environ.get("LLM_SAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CLIPS = DATA_DIR / "laparoscopic-clips"
ACTION_OF_CLIP = {"retract": "Tissue Retraction", "coagulate": "Coagulation", "dissect": "Dissection"}


def _prior_planner() -> Any:
    from planner.engines import create_engine
    from planner.planner import Planner
    from planner.prior import packaged_prior

    prior = packaged_prior()
    return Planner(create_engine("prior", prior), prior)


def _clips() -> list[Path]:
    clips = sorted(CLIPS.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"bench: no clips in {CLIPS} (set LLM_SAP_DATA)")
    return clips


def _switching_timeline(path: Path, clip: Path, every_s: float, length_s: float = 32.0) -> Path:
    """A timeline over the clip with a switch every ``every_s`` (the oracle's labels)."""
    first = next((a for k, a in ACTION_OF_CLIP.items() if k in clip.name), "Dissection")
    cycle = [first, "Dissection" if first != "Dissection" else "Tissue Retraction", "Coagulation"]
    rows, t, i = [], 0.0, 0
    while t < length_s:
        rows.append(f"{t:.2f},{cycle[i % 3]}")
        t, i = t + every_s, i + 1
    path.write_text("start_s,action\n" + "\n".join(rows) + "\n")
    return path


async def bench_replay(repeats: int) -> dict[str, Any]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in _clips():
            timeline = _switching_timeline(Path(tmp) / f"{clip.stem}.csv", clip, 8.0)
            decode, pipeline = [], []
            for _ in range(repeats):
                decode.append(decode_only_fps(clip))
                report = await replay(ServiceConfig(), _prior_planner, str(clip), str(timeline))
                pipeline.append(report["frames"]["decoded"] / report["wall_s"])
            d, p = statistics.median(decode), statistics.median(pipeline)
            out[clip.name] = {
                "decode_only_fps": round(d, 1),
                "replay_fps": round(p, 1),
                "ratio": round(p / d, 3),
            }
    return out


async def bench_live(loops: int) -> dict[str, Any]:
    import aiomqtt

    from streamer.mqtt.broker import EmbeddedBroker
    from streamer.service import Service

    broker = EmbeddedBroker()
    url = await broker.start()
    delivered: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clips = _clips()
            streams = tuple(
                StreamConfig(
                    room=f"bench-{i}",
                    source=str(clip),
                    recognizer=f"timeline:{_switching_timeline(Path(tmp) / f'{i}.csv', clip, 4.5)}",
                )
                for i, clip in enumerate(clips)
            )
            mqtt = MqttConfig(broker=url, protocol="3.1.1")  # amqtt speaks 3.1.1 only
            cfg = ServiceConfig(streams=streams, realtime=True, refresh_text=False, mqtt=mqtt)
            port = int(url.rsplit(":", 1)[1])
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as sub:
                await sub.subscribe("llm-sap/v1/+/recommendation", qos=1)

                async def collect() -> None:
                    async for m in sub.messages:
                        payload = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                        start = payload["stamps"].get("captured", payload["stamps"]["decoded"])
                        delivered.append((time.time() - start) * 1000)

                collector = asyncio.create_task(collect())
                totals: list[float] = []
                holds: list[float] = []
                for _ in range(loops):
                    service = Service(cfg, planner_factory=_prior_planner)
                    await service.run(exit_when_done=True)
                    for run in service.runs:
                        totals += run.pipeline.latency.values("total")
                        holds += run.pipeline.latency.values("segmentation_hold")
                await asyncio.sleep(0.5)
                collector.cancel()
    finally:
        await broker.stop()
    return {
        "rooms": len(streams),
        "loops": loops,
        "capture_to_outbox_ms": percentiles(totals),
        "capture_to_subscriber_ms": percentiles(delivered),
        "segmentation_hold_ms": percentiles(holds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.benchmarks.pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("what", choices=("replay", "live"))
    parser.add_argument("--repeats", type=int, default=3, help="replay: runs per clip (median)")
    parser.add_argument("--loops", type=int, default=2, help="live: times to play the clips")
    parser.add_argument("--json", type=Path, dest="json_out")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    if args.what == "replay":
        result = asyncio.run(bench_replay(args.repeats))
        for name, r in result.items():
            print(f"{name:<50} decode-only {r['decode_only_fps']:>7.1f} fps"
                  f"   replay {r['replay_fps']:>7.1f} fps   ratio {r['ratio']:.2f}")  # fmt: skip
    else:
        result = asyncio.run(bench_live(args.loops))
        for key in ("capture_to_outbox_ms", "capture_to_subscriber_ms", "segmentation_hold_ms"):
            s = result[key]
            print(f"{key:<26} n={s.get('n')}  p50 {s.get('p50')}  p90 {s.get('p90')}  p99 {s.get('p99')}"
                  f"  max {s.get('max')}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
