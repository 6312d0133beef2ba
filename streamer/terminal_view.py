"""A terminal view of one room, as an MQTT subscriber sees it (``llm-sap demo`` and ``llm-sap watch``).

Formatting is pure (``format_message``); ``watch`` is the subscriber loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from streamer.mqtt.url import BrokerSettings, parse_broker_url
from streamer.payloads import Topics

_ACTION_STYLE = {
    "Aspiration": "cyan",
    "Coagulation": "magenta",
    "Dissection": "yellow",
    "Tissue Retraction": "green",
    "Vessel Clipping": "red",
}


def _clock(seconds: float | None) -> str:
    s = max(seconds or 0.0, 0.0)
    return f"{int(s // 60):02d}:{s % 60:04.1f}"


def basis_text(basis: dict[str, Any] | None) -> str:
    """What a plan saw, in words: "updated 12 s into the clip, 5 keyframes, caption" for an in-clip
    refresh, "at clip start, 1 keyframe" for the first plan of a clip, "at clip start" when it saw
    labels only ("" without a basis)."""
    if not basis:
        return ""
    n = basis["keyframes"]
    parts = [f"{n} keyframe{'' if n == 1 else 's'}"] if n else []  # label-only planners see none
    parts += ["caption"] if basis["caption"] else []
    seen = "".join(f", {p}" for p in parts)
    if basis["trigger"] == "refresh":
        return f"updated {basis['clip_elapsed_s']:.0f} s into the clip{seen}"
    return f"at clip start{seen}"


def format_message(
    topic: str, payload: dict[str, Any], previous_status: dict[str, Any] | None = None
) -> Text | None:
    """One line for a message, or None for one not shown. ``previous_status``: the last status
    payload shown, so that a status that changes only the stream does not repeat "assistant online"."""
    kind = payload.get("type")
    if topic.endswith("/recommendation/current"):
        return None  # the retained copy of a recommendation already shown
    if kind == "clip":
        clip = payload["clip"]
        text = Text(f"{_clock(payload.get('detected_s'))}  clip #{clip['index']} {payload['event']:<7} ")
        text.append(clip["action"], style=_ACTION_STYLE.get(clip["action"], ""))
        if payload["event"] == "ended":
            text.append(f"  ({clip['end_s'] - clip['start_s']:.1f} s)", style="dim")
        return text
    if kind == "recommendation":
        text = Text(f"{_clock(payload.get('stream_time_s'))}  ")
        if payload["refresh"]:
            resp = payload.get("response") or {}
            first = (resp.get("next_actions") or [{}])[0]
            text.append("   why: ", style="dim")
            text.append(f"{first.get('rationale', '')}", style="italic")
            return text
        refreshed = (payload.get("basis") or {}).get("trigger") == "refresh"
        text.append("   next ▷ " if refreshed else "next ▶ ", style="bold")
        for i, r in enumerate(payload["ranked"][:3]):
            style = _ACTION_STYLE.get(r["action"], "")
            text.append(r["action"], style=f"bold {style}" if i == 0 else style)
            text.append(f" {r['score']:.2f}" + ("   " if i < 2 else ""), style="dim")
        lat = payload.get("latency_ms", {}).get("total")
        text.append(f"  [{payload['engine']}{', DEGRADED' if payload['degraded'] else ''}", style="dim")
        text.append(f", {lat:.1f} ms]" if lat is not None else "]", style="dim")
        seen = basis_text(payload.get("basis"))
        if seen:
            text.append(f"  {seen}", style="dim")
        return text
    if kind == "status":
        return format_status(payload, previous_status)
    return None


def format_status(payload: dict[str, Any], previous: dict[str, Any] | None = None) -> Text | None:
    """ "assistant online, stream running"; then only what changed: "stream ended", "assistant offline"."""
    state, stream = payload["state"], payload["stream"]
    reason = f" ({payload['reason']})" if payload.get("reason") else ""
    style = "bold green" if state == "online" else "bold red"
    if previous is None or previous["state"] != state:
        same_stream = previous is not None and previous["stream"] == stream
        words = f"assistant {state}" + ("" if same_stream else f", stream {stream}")
        return Text(words + reason, style=style)
    if previous["stream"] != stream or previous.get("reason") != payload.get("reason"):
        return Text(f"stream {stream}{reason}", style=style)
    return None  # the same status again (a retained copy, a heartbeat)


async def watch(
    broker: str | BrokerSettings,
    room: str,
    console: Console,
    *,
    ready: asyncio.Event | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> int:
    """Print every message of ``room`` until ``until(payload)`` is true; return the count.
    ``broker``: a URL, or settings with credentials and TLS. MQTT 3.1.1: any broker speaks it."""
    import uuid

    import aiomqtt

    from streamer.mqtt.publisher import tls_context

    settings = parse_broker_url(broker) if isinstance(broker, str) else broker
    tls = tls_context(settings)
    topics = Topics(room)
    count = 0
    shown_status: dict[str, Any] | None = None
    async with aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        protocol=aiomqtt.ProtocolVersion.V311,
        identifier=f"llm-sap-watch-{room}-{uuid.uuid4().hex[:8]}",
        tls_context=tls,
        tls_insecure=settings.tls_insecure if tls else None,
    ) as client:
        await client.subscribe(f"{topics.recommendation.rsplit('/', 1)[0]}/#", qos=1)
        if ready is not None:
            ready.set()
        async for message in client.messages:
            payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            count += 1
            line = format_message(str(message.topic), payload, shown_status)
            if payload.get("type") == "status":
                shown_status = payload
            if line is not None:
                console.print(line)
            if until is not None and until(payload):
                break
    return count
