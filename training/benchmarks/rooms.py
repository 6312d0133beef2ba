"""Rooms per node: N live rooms in one process, one shared planner engine, real video.

    python -m training.benchmarks.rooms [--rooms 1,4,8,16] [--planners prior,learned,tiny] [--json OUT]

Each room plays one of the three real laparoscopic clips (854x480 H.264, 25 fps, realtime
pacing) with the timeline oracle switching action every 5 s; the clips play again until
``--samples`` recommendations were published per setting (at least once). Planners: ``prior``
(the n-gram), ``learned`` (the learned sequence planner, the default; inline like the prior) and
``tiny`` (a tiny random Qwen2 built here, ranked through the shared engine worker, batched across
rooms). A subscriber in another process measures capture → subscriber latency of every
recommendation; CPU (percent of one core, the whole process) and peak RSS are sampled. Broker:
mosquitto when installed (as in production), else the embedded one. Prints one row per setting
and the largest room count whose p99 stays within ``--p99-ms`` (default 50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from planner.config import PlannerConfig
from planner.factory import SharedPlanning, load_prior
from planner.logs import configure_logging
from streamer.benchmarks.performance import start_mosquitto
from streamer.benchmarks.pipeline import _clips, _switching_timeline
from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.latency import percentiles

_SUBSCRIBER = """
import asyncio, json, sys, time
import aiomqtt
async def main(host, port, v5):
    proto = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(host, port, protocol=proto) as client:
        await client.subscribe("llm-sap/v1/+/recommendation", qos=1)
        print("READY", flush=True)
        async for m in client.messages:
            p = json.loads(bytes(m.payload))
            start = p["stamps"].get("captured", p["stamps"]["decoded"])
            print(round((time.time() - start) * 1000, 3), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "5"))
"""


class _Sampler:
    """CPU (percent of one core) and peak RSS of this process, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def __enter__(self) -> _Sampler:
        self._cpu0, self._t0 = sum(self.proc.cpu_times()[:2]), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_percent = (
            100 * (sum(self.proc.cpu_times()[:2]) - self._cpu0) / (time.perf_counter() - self._t0)
        )


async def _broker() -> tuple[str, bool, Any]:
    """(url, speaks v5, a stopper): mosquitto on a free port when installed, else the embedded one."""
    started = await start_mosquitto()
    if started is not None:
        return started[0], True, started[1]
    from streamer.mqtt.broker import EmbeddedBroker

    broker = EmbeddedBroker()
    url = await broker.start()
    return url, False, broker.stop


async def run_setting(rooms: int, planner: PlannerConfig, workdir: Path, loops: int) -> dict[str, Any]:
    from streamer.service import Service

    url, v5, stop_broker = await _broker()
    host, port = url.rsplit("/", 1)[1].split(":")
    sub = subprocess.Popen(
        [sys.executable, "-c", _SUBSCRIBER, host, port, "5" if v5 else "3"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != "READY":
        raise SystemExit("bench: the subscriber did not start")
    clips = _clips()
    streams = tuple(
        StreamConfig(
            room=f"room-{i}",
            source=str(clips[i % len(clips)]),
            recognizer=f"timeline:{_switching_timeline(workdir / f'{i}.csv', clips[i % len(clips)], 5.0)}",
        )
        for i in range(rooms)
    )
    mqtt = MqttConfig(broker=url, protocol="5" if v5 else "3.1.1")
    cfg = ServiceConfig(streams=streams, realtime=True, refresh_text=False, mqtt=mqtt)
    try:
        with SharedPlanning(planner, load_prior(planner)) as planning, _Sampler() as sampler:
            for _ in range(loops):
                service = Service(cfg, planner_factory=planning.planner)
                await service.run(exit_when_done=True)
            batches = planning.worker.largest_batch if planning.worker else 0
        await asyncio.sleep(1.0)
    finally:
        sub.terminate()
        out, _ = sub.communicate(timeout=10)
        await stop_broker()
    delivered = [float(line) for line in out.split() if line.replace(".", "", 1).isdigit()]
    return {
        "rooms": rooms,
        "loops": loops,
        "broker": "mosquitto" if v5 else "embedded",
        "received": len(delivered),
        "capture_to_subscriber_ms": percentiles(delivered),
        "cpu_percent_of_one_core": round(sampler.cpu_percent, 1),
        "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "largest_batch": batches,
    }


def _planner_config(name: str, workdir: Path) -> PlannerConfig:
    if name in ("prior", "learned"):  # the n-gram; the learned sequence planner (the default)
        return PlannerConfig(engine=name)
    if name == "tiny":
        from training.tiny_models import build_tiny_model

        model = build_tiny_model(workdir / "tiny-qwen")
        return PlannerConfig(engine=f"transformers:{model}")
    raise SystemExit(f"bench: unknown planner {name!r} (prior, learned, tiny)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.benchmarks.rooms", description=__doc__.splitlines()[0]
    )
    p.add_argument("--rooms", default="1,4,8,16", help="room counts, comma-separated (default 1,4,8,16)")
    p.add_argument(
        "--planners", default="prior,learned,tiny", help="prior, learned and/or tiny (default all three)"
    )
    p.add_argument(
        "--samples", type=int, default=30, help="recommendations per setting, at least (default 30)"
    )
    p.add_argument("--p99-ms", type=float, default=50.0, help="latency budget for the verdict (default 50)")
    p.add_argument("--json", type=Path, dest="json_out", help="write the results here")
    args = p.parse_args(argv)
    configure_logging("console", "warning")
    counts = [int(c) for c in args.rooms.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        for name in args.planners.split(","):
            planner = _planner_config(name, Path(tmp))
            for n in counts:
                print(f"... {name}: {n} room(s)", file=sys.stderr, flush=True)
                loops = max(1, math.ceil(args.samples / (n * 6)))  # ~6 recommendations per room and play
                r = asyncio.run(run_setting(n, planner, Path(tmp), loops))
                r["planner"] = name
                results.append(r)
                s = r["capture_to_subscriber_ms"]
                print(f"{name:<6} rooms {n:>2}  received {r['received']:>4}"
                      f"  capture→subscriber p50 {s.get('p50')} p99 {s.get('p99')} ms"
                      f"  CPU {r['cpu_percent_of_one_core']}%  RSS {r['peak_rss_mb']} MB"
                      f"  largest batch {r['largest_batch']}  ({r['broker']})", flush=True)  # fmt: skip
    for name in args.planners.split(","):
        ok = [r["rooms"] for r in results if r["planner"] == name
              and (r["capture_to_subscriber_ms"].get("p99") or 1e9) <= args.p99_ms]  # fmt: skip
        best = max(ok) if ok else 0
        print(f"verdict: {name}: {best} room(s) within p99 <= {args.p99_ms:g} ms on {os.cpu_count()} cores")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
