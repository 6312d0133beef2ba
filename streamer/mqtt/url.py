"""Broker URLs: ``mqtt://[user[:pass]@]host[:port]`` and ``mqtts://...`` → :class:`BrokerSettings`.

Passwords never appear in ``repr``, logs or error messages (they are masked as ``***``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from streamer.exceptions import BrokerURLError

Protocol = Literal["auto", "5", "3.1.1"]
PROTOCOLS: tuple[Protocol, ...] = ("auto", "5", "3.1.1")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}

_PASSWORD_IN_URL = re.compile(r"(://[^/@:]*:)[^@/]*@")


def mask_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to connect. ``protocol="auto"`` tries MQTT 5 and falls back to 3.1.1."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate (mutual TLS)
    key_file: str | None = None
    tls_insecure: bool = False  # skip certificate and host name checks (tests only)
    protocol: Protocol = "auto"
    keepalive: int = 30  # seconds; also how fast the broker notices a dead client (x1.5)

    def __post_init__(self) -> None:
        if not self.host:
            raise BrokerURLError("broker host must not be empty")
        if not 0 < self.port < 65536:
            raise BrokerURLError(f"broker port must be 1..65535, got {self.port}")
        if self.protocol not in PROTOCOLS:
            raise BrokerURLError(f"MQTT protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.keepalive < 1:
            raise BrokerURLError(f"MQTT keepalive must be >= 1 s, got {self.keepalive}")
        if self.key_file and not self.cert_file:
            raise BrokerURLError("MQTT TLS key_file given without cert_file")

    @property
    def url(self) -> str:
        """The broker URL with the password masked: safe to log."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"BrokerSettings(url={self.url!r}, tls={self.tls}, ca_file={self.ca_file!r}, "
            f"cert_file={self.cert_file!r}, key_file={self.key_file!r}, tls_insecure={self.tls_insecure}, "
            f"protocol={self.protocol!r}, keepalive={self.keepalive})"
        )

    __str__ = __repr__


def parse_broker_url(url: str) -> BrokerSettings:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` (or ``mqtts://``); user and password are %-decoded."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        # urlsplit's messages quote the port or the host, never the user info.
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: unexpected path, query or fragment")
    if port == 0:
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: port must be 1..65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username == "":
        raise BrokerURLError(f"bad MQTT broker URL {shown!r}: empty user name")
    return BrokerSettings(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        username=username,
        password=password,
        tls=parts.scheme == "mqtts",
    )


def watch_commands(settings: BrokerSettings, room: str) -> tuple[str, str]:
    """Commands a person can paste to watch a room: ``mosquitto_sub`` (Debian's mosquitto-clients)
    and ``llm-sap watch``. The password is never printed: ``$MQTT_PASSWORD`` stands for it (both
    commands read it from there)."""
    q = shlex.quote
    topic = q(f"llm-sap/v1/{room}/#")
    sub = ["mosquitto_sub", "-h", q(settings.host), "-p", str(settings.port), "-t", topic, "-v"]
    if settings.username is not None:
        sub += ["-u", q(settings.username)]
        if settings.password is not None:
            sub += ["-P", '"$MQTT_PASSWORD"']
    if settings.tls:
        sub += ["--cafile", q(settings.ca_file)] if settings.ca_file else ["--capath", "/etc/ssl/certs"]
        if settings.tls_insecure:
            sub.append("--insecure")
    scheme = "mqtts" if settings.tls else "mqtt"
    user = f"{settings.username}@" if settings.username is not None else ""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    watch = ["llm-sap", "watch", "--broker", q(f"{scheme}://{user}{host}:{settings.port}"), "--room", q(room)]
    if settings.ca_file:
        watch += ["--ca-file", q(settings.ca_file)]
    if settings.tls_insecure:
        watch.append("--tls-insecure")
    return " ".join(sub), " ".join(watch)
