"""The page only its OR can reach: Host check (DNS rebinding), CORS on the event stream, origin
scheme, control characters in logged paths, a cap on pages per room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from streamer.web.app import WebSettings, create_app, host_allowed
from streamer.web.hub import EventHub
from streamer.web.signaling import SIGNALING

pytestmark = pytest.mark.timeout(30)
ROOM = "or-1"


@contextlib.asynccontextmanager
async def client_for(hub: EventHub, settings: WebSettings) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(hub, settings)
    async with TestClient(TestServer(app)) as client:
        try:
            yield client
        finally:
            hub.close()
            await app[SIGNALING].close()


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("10.1.2.3", True),
        ("or-node.hospital.local:8080", True),  # configured
        ("OR-NODE.hospital.local.", True),
        ("evil.example:8080", False),  # a rebinding page's own name
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
def test_host_allowed(host: str, ok: bool) -> None:
    assert host_allowed(host, ("or-node.hospital.local",)) is ok


async def test_dns_rebinding_is_refused_even_without_a_token() -> None:
    hub = EventHub([ROOM])
    async with client_for(hub, WebSettings(token=None, allowed_hosts=("or-node.local",))) as client:
        for path in (f"/events?room={ROOM}", f"/config?room={ROOM}", f"/offer?room={ROOM}"):
            method = "POST" if path.startswith("/offer") else "GET"
            response = await client.request(method, path, headers={"Host": f"evil.example:{client.port}"})
            assert response.status == 421, path
            assert "is not this server" in (await response.json())["error"]
        response = await client.get(f"/config?room={ROOM}", headers={"Host": f"or-node.local:{client.port}"})
        assert response.status == 200
        response = await client.get(f"/config?room={ROOM}", headers={"Host": f"localhost:{client.port}"})
        assert response.status == 200


async def test_the_event_stream_carries_cors_headers_for_allowed_origins() -> None:
    allowed = "https://or-dashboard.example"
    hub = EventHub([ROOM])
    async with client_for(hub, WebSettings(cors_origins=(allowed,))) as client:
        response = await client.get(f"/events?room={ROOM}", headers={"Origin": allowed})
        assert response.status == 200
        assert response.headers.get("Access-Control-Allow-Origin") == allowed
        assert "Origin" in response.headers.get("Vary", "")
        response.close()


async def test_the_origin_check_compares_the_scheme() -> None:
    hub = EventHub([ROOM])
    async with client_for(hub, WebSettings()) as client:
        same = f"http://{client.host}:{client.port}"
        other_scheme = f"https://{client.host}:{client.port}"
        assert (await client.get(f"/config?room={ROOM}", headers={"Origin": same})).status == 200
        response = await client.get(f"/config?room={ROOM}", headers={"Origin": other_scheme})
        assert response.status == 403


async def test_control_characters_in_paths_are_escaped_in_logs() -> None:
    hub = EventHub([ROOM])
    async with client_for(hub, WebSettings()) as client:
        with capture_logs() as logs:
            await client.get("/x%1b[31mRED%0aweb.request%20forged=1")
    lines = [e for e in logs if e["event"] == "web.request"]
    assert lines, logs
    path = lines[0]["path"]
    assert "\x1b" not in path and "\n" not in path and "\\x1b[31mRED\\nweb.request" in path


async def test_a_room_takes_a_bounded_number_of_pages() -> None:
    hub = EventHub([ROOM], max_clients=2)
    async with client_for(hub, WebSettings()) as client:
        first = await client.get(f"/events?room={ROOM}")
        second = await client.get(f"/events?room={ROOM}")
        assert first.status == second.status == 200
        third = await client.get(f"/events?room={ROOM}")
        assert third.status == 503 and "pages open" in (await third.json())["error"]
        first.close()
        for _ in range(50):  # the server notices the closed page, and a slot is free again
            await asyncio.sleep(0.05)
            if len(hub.clients(ROOM)) < 2:
                break
        fourth = await client.get(f"/events?room={ROOM}")
        assert fourth.status == 200
        second.close()
        fourth.close()
