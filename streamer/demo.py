"""The one-command demo: an embedded broker, a synthetic procedure, the live pipeline, and a
terminal view of what an MQTT subscriber receives."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from planner.actions import TISSUE_RETRACTION
from planner.config import PlannerConfig
from planner.planner import Planner
from planner.prior import SequencePrior
from streamer.config import ServiceConfig, StreamConfig
from streamer.exceptions import StreamFailedError
from streamer.mqtt.broker import EmbeddedBroker
from streamer.mqtt.url import parse_broker_url, watch_commands
from streamer.service import Service
from streamer.sources.base import FrameSource
from streamer.sources.synthetic import SyntheticSource
from streamer.terminal_view import watch

log = structlog.get_logger(__name__)


def synthetic_procedure(
    prior: SequencePrior, clips: int = 8, seed: int = 7, min_s: float = 8.0, max_s: float = 20.0
) -> list[tuple[float, str]]:
    """A plausible clip sequence drawn from the prior (seeded), with durations in [min_s, max_s]."""
    rng = random.Random(seed)
    labels = [TISSUE_RETRACTION]
    while len(labels) < clips:
        probs = prior.next_action_scores(labels)
        actions, weights = zip(*probs.items(), strict=True)
        labels.append(rng.choices(actions, weights=weights)[0])
    out, t = [], 0.0
    for label in labels:
        out.append((round(t, 1), label))
        t += rng.uniform(min_s, max_s)
    return out


def write_timeline_csv(rows: list[tuple[float, str]], path: Path) -> Path:
    path.write_text("start_s,action\n" + "".join(f"{s},{a}\n" for s, a in rows), encoding="utf-8")
    return path


async def run_demo(
    cfg: ServiceConfig,
    planner_factory: Callable[[], Planner],
    prior: SequencePrior,
    console: Console,
    workdir: Path,
    *,
    video: str | None = None,
    timeline: str | None = None,
    speed: float = 8.0,
    room: str = "demo",
    planner_config: PlannerConfig | None = None,
) -> dict[str, Any]:
    broker = EmbeddedBroker(port=cfg.mqtt.embedded_port, fallback=True)
    url = await broker.start()
    mosquitto_sub, _ = watch_commands(parse_broker_url(url), room)
    hint = f"watch it from another terminal too: {mosquitto_sub}"
    console.print(hint, style="dim", markup=False, highlight=False)
    try:
        if video is None:
            rows = synthetic_procedure(prior)
            duration = rows[-1][0] + 15.0
            timeline = str(write_timeline_csv(rows, workdir / "demo-timeline.csv"))
            console.print(f"[dim]synthetic procedure: {len(rows)} clips, {duration:.0f} s of video "
                          f"played at {speed:g}x; broker {url}[/dim]")  # fmt: skip

            def source_factory(stream: StreamConfig, c: ServiceConfig) -> FrameSource:
                return SyntheticSource(
                    rows, duration_s=duration, fps=10.0, size=(64, 64), realtime=True, speed=speed
                )
        else:
            from streamer.service import default_source as source_factory
        assert timeline is not None
        stream = StreamConfig(room=room, source=video or "synthetic", recognizer=f"timeline:{timeline}")
        cfg = cfg.model_copy(
            update={"streams": (stream,), "mqtt": cfg.mqtt.model_copy(update={"broker": url})}
        )
        service = Service(
            cfg, planner_factory=planner_factory, source_factory=source_factory, planner_config=planner_config
        )
        ready = asyncio.Event()
        done = lambda p: p.get("type") == "status" and p.get("state") == "offline"  # noqa: E731
        watcher = asyncio.create_task(watch(url, room, console, ready=ready, until=done))
        await _subscribed(watcher, ready, url)
        (state,) = await service.run(exit_when_done=True)
        try:
            count = await asyncio.wait_for(watcher, 10)
        except TimeoutError:  # the run is over; only the view missed the final status
            log.warning("demo.subscriber_missed_offline", broker=url, waited_s=10)
            count = -1
        return {
            "messages": count,
            "recommendations": state.recommendations,
            "clips": len(state.clips),
            "failed": service.failed_streams,
        }
    finally:
        await broker.stop()


async def _subscribed(watcher: asyncio.Task[int], ready: asyncio.Event, url: str) -> None:
    """Wait until the terminal view subscribed (10 s); else one line, exit 1, nothing left running."""
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({watcher, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        return
    waiting.cancel()
    watcher.cancel()
    (outcome,) = await asyncio.gather(watcher, return_exceptions=True)
    why = f": {outcome}" if isinstance(outcome, Exception) else " within 10 s"
    raise StreamFailedError(f"the demo's subscriber could not reach the embedded broker at {url}{why}")
