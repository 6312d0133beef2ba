"""An embedded MQTT 3.1.1 broker (amqtt) on loopback, for when no broker is configured.

Anonymous access, loopback only (amqtt's default listener would bind 0.0.0.0: we always bind).
No persistence and no offline queues for anonymous clients: production uses mosquitto.

The broker runs on its own event loop in its own thread (``mqtt-broker``), never on the loop of
the pipelines that publish to it: broker work does not delay a stream, and a busy stream does
not delay delivery to subscribers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("streamer.mqtt")
T = TypeVar("T")


#: the embedded broker's port unless configured (``service.mqtt.embedded_port``): MQTT's own
DEFAULT_PORT = 1883


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (as asyncio binds it: SO_REUSEADDR on POSIX)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if hasattr(socket, "SO_REUSEADDR"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """``url = await EmbeddedBroker().start()`` … ``await broker.stop()``. ``port=0``: a free port.

    ``fallback``: when ``port`` is taken (another broker, a second service), take a free port
    instead and say so in one warning line, rather than fail."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, fallback: bool = False) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the embedded broker binds a loopback IP only (anonymous access), got {host!r}")
        if not 0 <= port < 65536:
            raise ValueError(f"embedded broker port must be 0..65535, got {port}")
        self.host = host
        self.port = port
        self.fallback = fallback
        self._broker: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> str:
        """Start listening; returns ``mqtt://HOST:PORT`` (the real port when 0 was asked)."""
        if self._thread is not None:
            raise RuntimeError("embedded broker already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="mqtt-broker", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await self._on_broker_loop(self._start_here())
        except BaseException:
            self._stop_thread()
            raise
        return self.url

    async def _start_here(self) -> None:
        """On the broker's own loop: start amqtt and learn the bound port."""
        # Imported here: only the demo and setups without a configured broker need amqtt.
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        taken = None
        if self.port and self.fallback and not port_is_free(self.host, self.port):
            taken, self.port = self.port, 0
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": bind}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
        self._broker = broker
        if self.port == 0:
            # amqtt has no public accessor for the bound port (pinned amqtt 0.12).
            sockets = broker._servers["default"].instance.sockets
            self.port = int(sockets[0].getsockname()[1])
        if taken is not None:  # one line: which port, and why not the usual one
            log.warning("mqtt_embedded_broker_started", port=self.port, wanted=taken,
                        reason=f"port {taken} is in use (another broker?)",
                        setting="service.mqtt.embedded_port")  # fmt: skip
        else:
            log.info("mqtt_embedded_broker_started", port=self.port, thread="mqtt-broker")

    async def stop(self) -> None:
        if self._loop is None:
            return
        try:
            if self._broker is not None:
                await self._on_broker_loop(self._stop_here())
        finally:
            self._stop_thread()

    async def _stop_here(self) -> None:
        broker, self._broker = self._broker, None
        await broker.shutdown()
        log.info("mqtt_embedded_broker_stopped", port=self.port)
        # amqtt leaves per-client tasks behind: end them here, on their own loop
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _on_broker_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
