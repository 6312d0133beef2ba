"""Publish → delivery latency on loopback: MqttPublisher → broker → an aiomqtt subscriber.

``python -m streamer.benchmarks.mqtt_latency [--count 1000] [--rate 100] [--json OUT]``

Runs against mosquitto (if installed; started on a free loopback port, anonymous, no persistence)
and the embedded amqtt broker. Latency is measured from ``publish()`` (the outbox) to the
subscriber's receipt, both in this process (one clock, one event loop), so it includes the
publisher's outbox and supervisor as the service would see them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from planner.logs import configure_logging
from streamer.mqtt.broker import EmbeddedBroker
from streamer.mqtt.outbox import OutMessage
from streamer.mqtt.publisher import MqttPublisher
from streamer.mqtt.url import parse_broker_url

TOPIC = "llm-sap/v1/bench/recommendation"


@contextlib.asynccontextmanager
async def mosquitto_broker(binary: str) -> AsyncIterator[str]:
    """A throwaway mosquitto on a free loopback port (anonymous: benchmark only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="llm-sap-bench-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(500):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {proc.returncode}")
                await asyncio.sleep(0.01)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def measure(url: str, protocol: aiomqtt.ProtocolVersion, count: int, rate_hz: float) -> dict[str, Any]:
    """Publish ``count`` messages at ``rate_hz``; latencies (ms) of their first delivery."""
    settings = parse_broker_url(url)
    received: dict[int, float] = {}
    duplicates = 0
    done = asyncio.Event()

    async def subscribe(ready: asyncio.Event) -> None:
        nonlocal duplicates
        ident = f"bench-sub-{uuid.uuid4().hex[:8]}"
        async with aiomqtt.Client(
            settings.host, settings.port, identifier=ident, protocol=protocol
        ) as client:
            await client.subscribe(TOPIC, qos=1)
            ready.set()
            async for message in client.messages:
                now = time.perf_counter()
                body = json.loads(message.payload)
                if body["seq"] in received:
                    duplicates += 1
                    continue
                received[body["seq"]] = (now - body["t"]) * 1000
                if len(received) == count:
                    done.set()

    ready = asyncio.Event()
    subscriber = asyncio.create_task(subscribe(ready))
    publisher = MqttPublisher(settings, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}", outbox_size=count)
    runner = asyncio.create_task(publisher.run())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        if not await publisher.wait_connected(10):
            raise RuntimeError(f"publisher did not connect to {settings.url}")
        start = time.perf_counter()
        for seq in range(count):
            await asyncio.sleep(max(0.0, start + seq / rate_hz - time.perf_counter()))
            body = json.dumps({"seq": seq, "t": time.perf_counter()}).encode()
            publisher.publish(OutMessage(TOPIC, body))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 5)
        protocol_used = publisher.stats["protocol"]
    finally:
        await publisher.close()
        await runner
        subscriber.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await subscriber
    return summarize(list(received.values()), count, duplicates) | {"protocol": protocol_used}


def summarize(latencies_ms: list[float], sent: int, duplicates: int) -> dict[str, Any]:
    values = sorted(latencies_ms)

    def pct(q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None

    return {
        "sent": sent,
        "received": len(values),
        "lost": sent - len(values),
        "duplicates": duplicates,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(values[-1], 3) if values else None,
        "mean_ms": round(statistics.fmean(values), 3) if values else None,
    }


async def run(count: int, rate_hz: float, brokers: list[str], mosquitto: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in brokers:
        if name == "mosquitto":
            if mosquitto is None:
                results[name] = {"skipped": "mosquitto not installed"}
                continue
            async with mosquitto_broker(mosquitto) as url:
                results[name] = await measure(url, aiomqtt.ProtocolVersion.V5, count, rate_hz)
        else:
            async with EmbeddedBroker() as broker:
                results[name] = await measure(broker.url, aiomqtt.ProtocolVersion.V311, count, rate_hz)
    return results


def table(results: dict[str, Any]) -> str:
    columns = ["protocol", "sent", "received", "lost", "duplicates", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    rows = [["broker", *columns]]
    for name, row in results.items():
        if "skipped" in row:
            rows.append([name, f"skipped: {row['skipped']}"] + [""] * (len(columns) - 1))
        else:
            rows.append([name, *(str(row[c]) for c in columns)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.benchmarks.mqtt_latency", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="messages per broker (default 1000)")
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second (default 100)")
    parser.add_argument("--brokers", default="mosquitto,embedded", help="comma list: mosquitto, embedded")
    parser.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = sorted(set(brokers) - {"mosquitto", "embedded"})
    if unknown or not brokers or args.count < 1 or args.rate <= 0:
        print(
            f"error: need --count >= 1, --rate > 0, brokers among mosquitto,embedded; got "
            f"{args.count}, {args.rate}, {args.brokers!r}",
            file=sys.stderr,
        )
        return 2
    mosquitto = args.mosquitto if Path(args.mosquitto).is_file() else None
    configure_logging("console", "warning")
    logging.getLogger("amqtt").setLevel(logging.ERROR)  # it warns about the MQTT 5 protocol probe
    results = asyncio.run(run(args.count, args.rate, brokers, mosquitto))
    print(f"publish → delivery latency, loopback, {args.count} msgs at {args.rate:g} msg/s, QoS 1")
    print(table(results))
    if args.json:
        meta = {"count": args.count, "rate_hz": args.rate, "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"config": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
