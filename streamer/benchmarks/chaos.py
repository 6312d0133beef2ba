"""Chaos run: the service with 2 rooms for a few minutes while the broker is killed, stopped and
restarted and the browser's peer is dropped and reconnected; what a subscriber got, counted.

``python -m streamer.benchmarks.chaos [--duration 180] [--json OUT]``. Needs mosquitto (its
binary; a private instance on a free loopback port, persistence saved every second) and Debian's
chromium (the WebRTC room's camera: Chromium's own test pattern through the real page).

Rooms: ``chaos-file`` (a synthetic procedure played in real time, a clip every 6 s of video) and
``chaos-cam`` (``source = "webrtc"``: headless Chromium opens the OR page with ``autostart=1``;
the timeline oracle switches every 5 s of stream time). A persistent MQTT 5 subscriber (QoS 1,
reconnecting) listens to ``llm-sap/v1/#``. Chaos, at fixed fractions of the run: broker SIGKILL
then restart; broker SIGSTOP for 3 s; the page's peer closed (``stopSharing()``) then shared again
(``share('camera')``); broker SIGTERM then restart; broker SIGSTOP for 3 s again.

Printed (and written as JSON): recommendations and clip events published (handed to MQTT by the
pipelines) / received (distinct ids) / lost / duplicated; false ``offline`` statuses (any offline
other than the final shutdown: the service never died); status-seq violations (a status seq seen
out of order or never seen, per session, and a final kept status, by the subscriber's rule, that
is not the shutdown); frames resumed after the reconnect, and how long the room was stalled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from planner.atomic import atomic_write_json
from planner.logs import configure_logging
from streamer.benchmarks.headless_chromium import chromium, devtools, find_chromium
from streamer.config import MqttConfig, ServiceConfig, StreamConfig, WebConfig
from streamer.messages import Outgoing
from streamer.mqtt.status_rule import newest_status
from streamer.service import Service
from streamer.sources.synthetic import SyntheticSource

FILE_ROOM, CAM_ROOM = "chaos-file", "chaos-cam"
CYCLE = ["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection", "Coagulation", "Aspiration"]


def _planner() -> Any:
    from planner.engines import create_engine
    from planner.planner import Planner
    from planner.prior import packaged_prior

    prior = packaged_prior()
    return Planner(create_engine("prior", prior), prior)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private mosquitto: anonymous on loopback, persistence saved every second."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        (workdir / "data").mkdir()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir / 'data'}/\nautosave_interval 1\nuser root\n"
            "max_queued_messages 100000\nlog_dest stderr\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def send(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(10)


class Subscriber:
    """Persistent MQTT 5 session (QoS 1), reconnecting: everything the broker accepted reaches it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client_id = f"chaos-sub-{uuid.uuid4().hex[:6]}"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived: dict[str, float] = {}  # message id -> first arrival (monotonic)
        self.connects = 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
            client = aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id, clean_start=False,
                                    protocol=aiomqtt.ProtocolVersion.V5, properties=properties,
                                    keepalive=10, timeout=3)  # fmt: skip
            try:
                async with client:
                    self.connects += 1
                    await client.subscribe("llm-sap/v1/#", qos=1)
                    async for m in client.messages:
                        raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                        payload = json.loads(raw)
                        self.received.append((str(m.topic), payload))
                        self.arrived.setdefault(str(payload.get("id")), time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())
        while self.connects == 0:
            if self._task.done():
                self._task.result()  # raises what went wrong
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Published:
    """What the pipelines handed to MQTT (a sink beside the MQTT one)."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []

    def emit(self, message: Outgoing) -> None:
        if not message.retained_copy:
            self.messages.append(message)


def _timeline(path: Path, every_s: float, total_s: float) -> Path:
    rows = [(round(i * every_s, 1), CYCLE[i % len(CYCLE)]) for i in range(int(total_s / every_s) + 1)]
    path.write_text("start_s,action\n" + "".join(f"{s},{a}\n" for s, a in rows))
    return path


async def chaos(duration_s: float, workdir: Path) -> dict[str, Any]:
    broker = Broker(workdir)
    broker.start()
    sub = Subscriber(broker.port)
    await sub.start()
    sinks = {FILE_ROOM: Published(), CAM_ROOM: Published()}
    file_rows_s = duration_s + 120
    file_timeline = _timeline(workdir / "file.csv", 6.0, file_rows_s)
    cfg = ServiceConfig(
        streams=(
            StreamConfig(room=FILE_ROOM, source="synthetic", recognizer=f"timeline:{file_timeline}"),
            StreamConfig(
                room=CAM_ROOM,
                source="webrtc",
                recognizer=f"timeline:{_timeline(workdir / 'cam.csv', 5.0, file_rows_s)}",
            ),
        ),
        recognizer_rate_hz=5.0,
        mqtt=MqttConfig(broker=f"mqtt://127.0.0.1:{broker.port}"),
        web=WebConfig(bind="127.0.0.1:0"),
    )
    rows = [(round(i * 6.0, 1), CYCLE[i % len(CYCLE)]) for i in range(int(file_rows_s / 6.0) + 1)]

    def source(stream: StreamConfig, c: ServiceConfig) -> SyntheticSource:
        return SyntheticSource(rows, duration_s=file_rows_s, fps=10.0, size=(64, 64), realtime=True)

    service = Service(cfg, planner_factory=_planner, source_factory=source, extra_sinks=lambda r: [sinks[r]])
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, exit_when_done=False))
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()
    resumed: dict[str, Any] = {}

    def note(what: str) -> None:
        events.append({"t_s": round(time.monotonic() - t0, 1), "event": what})
        print(f"[{events[-1]['t_s']:7.1f} s] {what}", flush=True)

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, t0 + fraction * duration_s - time.monotonic()))

    try:
        await asyncio.wait_for(service.started.wait(), 20)
        assert service.web is not None and service.web.url is not None
        cam = service.web.source_for(CAM_ROOM)
        with chromium(f"{service.web.url}/?room={CAM_ROOM}&autostart=1", workdir / "chromium") as port:
            async with devtools(port) as dev:
                note("service and browser up")
                await at(0.12)
                broker.stop(signal.SIGKILL)
                note("broker SIGKILL")
                await asyncio.sleep(2.0)
                broker.start()
                note("broker restarted")
                await at(0.28)
                broker.send(signal.SIGSTOP)
                note("broker SIGSTOP (3 s)")
                await asyncio.sleep(3.0)
                broker.send(signal.SIGCONT)
                note("broker SIGCONT")
                await at(0.44)
                before = cam.stats.decoded
                await dev.evaluate("stopSharing()")
                note(f"browser peer closed (frames so far {before})")
                while cam.health != "stalled" and time.monotonic() - t0 < duration_s:
                    await asyncio.sleep(0.1)
                stalled_at = time.monotonic()
                note(f"room {CAM_ROOM} stalled: {cam.health_reason}")
                await asyncio.sleep(3.0)
                decoded = cam.stats.decoded
                await dev.evaluate("share('camera')")
                shared_at = time.monotonic()
                note("browser shares again (new offer)")
                while cam.health != "live" and time.monotonic() - shared_at < 30:
                    await asyncio.sleep(0.05)
                resumed["first_frame_after_s"] = round(time.monotonic() - shared_at, 2)
                resumed["stalled_s"] = round(time.monotonic() - stalled_at, 2)
                await at(0.60)
                resumed["frames_after_reconnect"] = cam.stats.decoded - decoded
                note(f"frames since the reconnect: {resumed['frames_after_reconnect']}")
                broker.stop(signal.SIGTERM)
                note("broker SIGTERM")
                await asyncio.sleep(2.0)
                broker.start()
                note("broker restarted")
                await at(0.78)
                broker.send(signal.SIGSTOP)
                note("broker SIGSTOP (3 s)")
                await asyncio.sleep(3.0)
                broker.send(signal.SIGCONT)
                note("broker SIGCONT")
                await at(1.0)
                resumed["recoveries"] = cam.recoveries
                stop.set()
                note("service stopping")
                states = await asyncio.wait_for(task, 30)
        await asyncio.sleep(3.0)  # the subscriber drains what the broker still holds
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await sub.stop()
        broker.stop()
    for e in events:  # event times on the subscriber's clock
        e["at"] = t0 + e["t_s"]
    return _report(duration_s, service, sinks, sub, states, events, resumed)


def _report(
    duration_s: float,
    service: Service,
    sinks: dict[str, Published],
    sub: Subscriber,
    states: Any,
    events: list[dict[str, Any]],
    resumed: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {"duration_s": duration_s, "events": events, "rooms": {}}
    totals = dict.fromkeys(
        ("published", "received", "lost", "duplicated", "false_offline", "seq_violations"), 0
    )
    for run, state in zip(service.runs, states, strict=True):
        room = run.config.room
        published = sinks[room].messages
        room_out: dict[str, Any] = {"stream": state.stream, "mqtt": run.publisher.stats}
        for kind, suffix in (("recommendation", "/recommendation"), ("clip", "/clip")):
            ids = [m.id for m in published if m.kind == kind]
            got = [p["id"] for t, p in sub.received if t == f"llm-sap/v1/{room}{suffix}"]
            lost = sorted(set(ids) - set(got))
            room_out[kind] = {"published": len(ids), "received": len(set(got)), "lost": len(lost),
                              "duplicated": len(got) - len(set(got))}  # fmt: skip
        statuses = [p for t, p in sub.received if t == f"llm-sap/v1/{room}/status"]
        mine = [p for p in statuses if p["session_id"] == run.pipeline.payloads.session_id]
        offline = {p["id"]: p for p in mine if p["state"] == "offline" and p.get("reason") != "shutdown"}
        # a will the broker sent because the broker itself shut down (mosquitto 2.0 sends every
        # client's will at once on SIGTERM, will delay or not) vs one caused by our link alone
        by_broker, false_offline = [], []
        for will_id, p in offline.items():
            before = [e for e in events if e["at"] <= sub.arrived.get(will_id, 0.0) + 0.5]
            recent = [e["event"] for e in before if sub.arrived.get(will_id, 0.0) - e["at"] < 10]
            (by_broker if "broker SIGTERM" in recent else false_offline).append(p)
        seen: list[int] = []
        violations = 0
        for p in mine:
            if p.get("will") or p["seq"] in seen:
                continue
            if seen and p["seq"] < max(seen):
                violations += 1  # out of order
            seen.append(p["seq"])
        violations += len(set(range(1, max(seen, default=0) + 1)) - set(seen))  # never seen
        kept = newest_status(mine)
        if kept is None or kept["state"] != "offline" or kept.get("will"):
            violations += 1  # the subscriber's rule does not end with the final shutdown
        room_out["status"] = {"received": len(mine), "false_offline": len(false_offline),
                              "offline_from_broker_shutdown": len(by_broker),
                              "seq_violations": violations, "final": kept,
                              "sequence": [[p["seq"], p["state"], p["stream"], p.get("reason"),
                                            bool(p.get("will"))] for p in mine]}  # fmt: skip
        out["rooms"][room] = room_out
        rec = room_out["recommendation"]
        for key in ("published", "received", "lost", "duplicated"):
            totals[key] += rec[key] + (0 if key in ("published", "received") else room_out["clip"][key])
        totals["false_offline"] += len(false_offline)
        totals["seq_violations"] += violations
    out["totals"] = totals
    out["webrtc"] = resumed
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.benchmarks.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print("chaos: chromium not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    configure_logging("console", "error")
    with tempfile.TemporaryDirectory(prefix="llm-sap-chaos-") as tmp:
        report = asyncio.run(chaos(args.duration, Path(tmp)))
    t, w = report["totals"], report["webrtc"]
    print(f"\nchaos run, {report['duration_s']:.0f} s, rooms {', '.join(report['rooms'])}")
    for room, r in report["rooms"].items():
        rec, clip, st = r["recommendation"], r["clip"], r["status"]
        print(f"  {room}: recommendations published {rec['published']}, received {rec['received']}, "
              f"lost {rec['lost']}, duplicated {rec['duplicated']}; clip events {clip['published']} / "
              f"{clip['received']} / lost {clip['lost']} / dup {clip['duplicated']}; false offline "
              f"{st['false_offline']} (wills sent by the broker's own shutdown: "
              f"{st['offline_from_broker_shutdown']}); status-seq violations {st['seq_violations']}; "
              f"reconnects {r['mqtt']['reconnects']}, slow PUBACKs {r['mqtt']['slow_pubacks']}")  # fmt: skip
    print(
        f"  total: published {t['published']}, received {t['received']}, lost {t['lost']}, duplicated "
        f"{t['duplicated']}, false offlines {t['false_offline']}, status-seq violations {t['seq_violations']}"
    )
    print(f"  webrtc: frames after reconnect {w.get('frames_after_reconnect')}, first frame "
          f"{w.get('first_frame_after_s')} s after the new offer, stalled {w.get('stalled_s')} s, "
          f"recoveries {w.get('recoveries')}")  # fmt: skip
    if args.json:
        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
