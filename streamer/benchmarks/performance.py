"""Streaming performance in one run: replay vs decode-only, live latency per broker, planning overhead.

    python -m streamer.benchmarks.performance [--repeats N] [--skip-live] [--json OUT]

Prints, all measured back to back in this process (ratios are the figures to compare; absolute
numbers move with the machine's load, which is printed too):
- replay fps / PyAV decode-only fps on one real clip and on a multi-clip video (the real clips
  re-encoded one after the other into a temp file, the timeline oracle switching at each clip's
  end and every few seconds within), with the pipeline's frame counters and clip agreement;
- live: one real clip paced at its 25 fps, the prior planner, one room; capture → subscriber
  p50/p99 measured by a subscriber in another process, with the embedded broker (started by this
  process, as the service does) and with mosquitto (when installed);
- the planning stage overhead: the ``planned`` stage (plan queued → ranked) minus the ranking
  itself, per recommendation (``plan_hop``), p50, for the prior (instant, inline) and for the
  prior behind the engine worker (how a model engine is called: one thread per process, a deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from planner.logs import configure_logging
from streamer.benchmarks.decode import decode_only_fps
from streamer.benchmarks.pipeline import ACTION_OF_CLIP, _clips, _prior_planner
from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.latency import percentiles
from streamer.replay import replay
from streamer.segmenter import SegmenterSettings

#: a subscriber in another process: prints READY once subscribed, then one capture → here latency
#: (ms) per recommendation; reconnects until the broker answers.
_SUBSCRIBER = """
import asyncio, json, sys, time
import aiomqtt
async def main(host, port, v5):
    proto = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client(host, port, protocol=proto, identifier="bench-subscriber") as client:
        await client.subscribe("llm-sap/v1/+/recommendation", qos=1)
        print("READY", flush=True)
        async for m in client.messages:
            p = json.loads(bytes(m.payload))
            if p.get("refresh"):
                continue
            start = p["stamps"].get("captured", p["stamps"]["decoded"])
            print(round((time.time() - start) * 1000, 3), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "5"))
"""
#: live: the oracle switches every this many stream seconds (with a segmenter that allows it)
LIVE_SWITCH_S = 1.5
LIVE_SEGMENTER = SegmenterSettings(smoothing_s=0.0, confirm_s=0.2, min_clip_s=1.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _action(clip: Path) -> str:
    return next((a for k, a in ACTION_OF_CLIP.items() if k in clip.name), "Dissection")


def _timeline(path: Path, segments: list[tuple[float, float, str]], every_s: float) -> Path:
    """Rows ``start_s,action``: each segment's own action, alternating with another every ``every_s``."""
    others = ["Dissection", "Tissue Retraction", "Coagulation"]
    rows: list[str] = []
    for start, end, action in segments:
        other = next(a for a in others if a != action)
        t, i = start, 0
        while t < end - 1e-9:
            rows.append(f"{t:.2f},{action if i % 2 == 0 else other}")
            t, i = t + every_s, i + 1
    path.write_text("start_s,action\n" + "\n".join(rows) + "\n")
    return path


def make_multi_clip_video(clips: list[Path], out: Path) -> list[tuple[float, float, str]]:
    """The clips one after the other in one H.264 file (re-encoded: the clips' parameter sets
    differ); returns (start_s, end_s, action) per clip."""
    segments: list[tuple[float, float, str]] = []
    with av.open(str(out), "w") as dst:
        vs = dst.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 854, 480, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        n = 0
        for clip in clips:
            start = n / 25
            with av.open(str(clip)) as src:
                for frame in src.decode(video=0):
                    frame = frame.reformat(854, 480, format="yuv420p")
                    frame.pts, frame.time_base = n, Fraction(1, 25)
                    for packet in vs.encode(frame):
                        dst.mux(packet)
                    n += 1
            segments.append((start, n / 25, _action(clip)))
        for packet in vs.encode(None):
            dst.mux(packet)
    return segments


class _WorkerPrior:
    """The prior engine behind the engine worker (``instant`` off): how a model engine is called."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name, self.model = engine.name, engine.model

    def rank(self, memory: Any) -> dict[str, float]:
        return self._engine.rank(memory)

    def generate(self, memory: Any, max_tokens: int) -> Any:
        return self._engine.generate(memory, max_tokens)

    def close(self) -> None:
        self._engine.close()


def _worker_prior_planner() -> Any:
    from planner.engines import create_engine
    from planner.planner import Planner
    from planner.prior import packaged_prior

    prior = packaged_prior()
    return Planner(_WorkerPrior(create_engine("prior", prior)), prior)


async def bench_replay(
    video: Path, timeline: Path, repeats: int, factory: Any = _prior_planner
) -> dict[str, Any]:
    decode, fps, reports = [], [], []
    await replay(ServiceConfig(), factory, str(video), str(timeline))  # warm-up: imports, first-use costs
    for _ in range(repeats):
        decode.append(await asyncio.to_thread(decode_only_fps, video))
        report = await replay(ServiceConfig(), factory, str(video), str(timeline))
        fps.append(report["frames"]["decoded"] / report["wall_s"])
        reports.append(report)
    d, p = statistics.median(decode), statistics.median(fps)
    last = reports[-1]
    cmp = last["clips"]["comparison"]
    return {
        "decode_only_fps": round(d, 1),
        "replay_fps": round(p, 1),
        "ratio": round(p / d, 3),
        "frames": last["frames"],
        "clips_found": len(last["clips"]["found"]),
        "clips_true": len(last["clips"]["truth"]),
        "clip_agreement": {k: cmp[k] for k in cmp if not isinstance(cmp[k], list | dict)},
        "rankings": len(last["recommendations"]),
        "stale_plans": last["stale_plans_discarded"],
        "planning_overhead": _overhead_from_report(last),
        "latency_planned_ms": last["latency_ms"].get("planned"),
        "latency_plan_rank_ms": last["latency_ms"].get("plan_rank"),
    }


def _overhead_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The planning stage (``plan_requested`` → ``planned``) minus the ranking's own time, per
    ranking (``plan_hop``), beside the two p50s."""
    lat = report["latency_ms"]
    planned, rank, hop = lat.get("planned", {}), lat.get("plan_rank", {}), lat.get("plan_hop", {})
    return {"planned_p50_ms": planned.get("p50"), "rank_p50_ms": rank.get("p50"),
            "overhead_p50_ms": hop.get("p50"), "overhead_p99_ms": hop.get("p99")}  # fmt: skip


async def start_mosquitto() -> tuple[str, Any] | None:
    """(url, an async stopper) of a mosquitto on a free loopback port, or None when not installed."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        return None
    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    (tmp / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(tmp / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await asyncio.sleep(0.5)

    async def stop() -> None:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)

    return f"mqtt://127.0.0.1:{port}", stop


async def bench_live(broker: str, clip: Path, timeline: Path) -> dict[str, Any] | None:
    """One live room (realtime pacing), the prior planner; capture → subscriber from another process."""
    from streamer.service import Service

    if broker == "embedded":
        from streamer.mqtt.broker import EmbeddedBroker

        embedded = EmbeddedBroker()
        url, stop, v5 = await embedded.start(), embedded.stop, False
    else:
        started = await start_mosquitto()
        if started is None:
            return None
        (url, stop), v5 = started, True
    host, port = url.rsplit("/", 1)[1].split(":")
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, host, port, "5" if v5 else "3"],
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sub.stdout is not None
        ready = await asyncio.to_thread(sub.stdout.readline)
        if ready.strip() != "READY":
            raise SystemExit("bench: the subscriber did not start")
        stream = StreamConfig(room="bench-live", source=str(clip), recognizer=f"timeline:{timeline}")
        mqtt = MqttConfig(broker=url, protocol="5" if v5 else "3.1.1")
        cfg = ServiceConfig(streams=(stream,), realtime=True, refresh_text=False, mqtt=mqtt,
                            oracle_segmenter=LIVE_SEGMENTER)  # fmt: skip
        service = Service(cfg, planner_factory=_prior_planner)
        await service.run(exit_when_done=True)
        run = service.runs[0]
        await asyncio.sleep(1.0)
    finally:
        sub.terminate()
        out, _ = await asyncio.to_thread(sub.communicate, None, 10)
        await stop()
    delivered = [float(x) for x in out.split() if x.replace(".", "", 1).isdigit()]
    state = run.pipeline.state
    return {
        "broker": broker,
        "rankings": state.rankings,
        "received": len(delivered),
        "dropped_frames": run.pipeline.source.stats.dropped,
        "decoded": run.pipeline.source.stats.decoded,
        "capture_to_outbox_ms": percentiles(run.pipeline.latency.values("total")),
        "capture_to_subscriber_ms": percentiles(delivered),
    }


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


async def run(repeats: int, live: bool) -> dict[str, Any]:
    clips = _clips()
    out: dict[str, Any] = {"load_before": _load()}
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp_dir:
        tmp = Path(tmp_dir)
        clip = clips[0]
        clip_timeline = _timeline(tmp / "clip.csv", [(0.0, 32.0, _action(clip))], 8.0)
        multi = tmp / "multi.mp4"
        segments = await asyncio.to_thread(make_multi_clip_video, clips, multi)
        multi_timeline = _timeline(tmp / "multi.csv", segments, 8.0)
        out["replay_clip"] = {"video": clip.name, **await bench_replay(clip, clip_timeline, repeats)}
        out["replay_multi"] = {
            "video": f"{len(clips)} clips, {segments[-1][1]:.0f} s (re-encoded)",
            **await bench_replay(multi, multi_timeline, repeats),
        }
        out["replay_multi_worker_engine"] = {
            "video": "the same, prior behind the engine worker",
            **await bench_replay(multi, multi_timeline, 1, _worker_prior_planner),
        }
        if live:
            live_timeline = _timeline(tmp / "live.csv", [(0.0, 32.0, _action(clip))], LIVE_SWITCH_S)
            out["live"] = [
                r for b in ("embedded", "mosquitto") if (r := await bench_live(b, clip, live_timeline))
            ]
    out["load_after"] = _load()
    return out


def _print(result: dict[str, Any]) -> None:
    print(f"machine: {result['load_before']} (before), {result['load_after']} (after)")
    for key in ("replay_clip", "replay_multi", "replay_multi_worker_engine"):
        r = result[key]
        f, ov = r["frames"], r["planning_overhead"]
        print(f"{key:<27} {r['video']}")
        print(f"  decode-only {r['decode_only_fps']:7.1f} fps  replay {r['replay_fps']:7.1f} fps  "
              f"ratio {r['ratio']:.2f}")  # fmt: skip
        print(f"  frames decoded {f['decoded']} delivered {f['delivered']} processed {f['processed']} "
              f"dropped {f['dropped']}; clips found {r['clips_found']} / true {r['clips_true']} "
              f"{r['clip_agreement']}; rankings {r['rankings']} stale {r['stale_plans']}")  # fmt: skip
        print(f"  planning: planned p50 {ov.get('planned_p50_ms')} ms, rank p50 {ov.get('rank_p50_ms')} ms, "
              f"overhead p50 {ov.get('overhead_p50_ms')} p99 {ov.get('overhead_p99_ms')} ms")  # fmt: skip
    for r in result.get("live", []):
        o, s = r["capture_to_outbox_ms"], r["capture_to_subscriber_ms"]
        print(f"live {r['broker']:<10} rankings {r['rankings']} received {r['received']} "
              f"dropped frames {r['dropped_frames']}/{r['decoded']}; capture→outbox p50 {o.get('p50')} "
              f"p99 {o.get('p99')} ms; capture→subscriber p50 {s.get('p50')} p99 {s.get('p99')} "
              f"max {s.get('max')} ms")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.benchmarks.performance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="replay runs per video, after a warm-up (median)"
    )
    parser.add_argument("--skip-live", action="store_true", help="replay and planning only")
    parser.add_argument("--json", type=Path, dest="json_out")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")
    result = asyncio.run(run(args.repeats, not args.skip_live))
    _print(result)
    if args.json_out:
        tmp = args.json_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
