"""``llm-sap watch --broker URL --room ROOM``: what the assistant publishes for a room, live, in the
terminal (the demo's view), from any MQTT broker: credentials in the URL or ``$MQTT_PASSWORD``, TLS
with ``mqtts://`` (``--ca-file``, ``--cert-file``/``--key-file``). Runs until Ctrl-C, or until
the room goes offline with ``--exit-when-offline``.

Exit codes: 0 stopped (or the room went offline); 1 the broker refused or dropped the connection;
2 bad input."""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import replace
from typing import Any

from rich.console import Console

from streamer.config import LiveConfig
from streamer.exceptions import StreamerError
from streamer.mqtt.broker import DEFAULT_PORT
from streamer.mqtt.url import BrokerSettings, mask_url, parse_broker_url
from streamer.terminal_view import watch

PASSWORD_ENV = "MQTT_PASSWORD"


class WatchError(StreamerError):
    """The broker could not be watched (refused, unreachable, dropped): exit 1, not bad input."""

    exit_code = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=f"mqtt://127.0.0.1:{DEFAULT_PORT}",
        help="mqtt://[user[:pass]@]host[:port] or mqtts://... (TLS); a user without a password in the "
        f"URL takes ${PASSWORD_ENV} (default: the embedded broker, mqtt://127.0.0.1:{DEFAULT_PORT})",
    )
    p.add_argument("--room", default="or-1", help="operating-room id, as in the topics llm-sap/v1/ROOM/...")
    p.add_argument("--ca-file", help="CA bundle for mqtts:// (default: the system's trusted CAs)")
    p.add_argument("--cert-file", help="client certificate, for brokers that want one (default: none)")
    p.add_argument("--key-file", help="the client certificate's key (default: none)")
    p.add_argument("--tls-insecure", action="store_true", help="skip certificate checks (tests only)")
    p.add_argument("--exit-when-offline", action="store_true", help="stop when the room goes offline")


def overrides(args: argparse.Namespace) -> list[str]:
    return []


def broker_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> BrokerSettings:
    """The URL, the password from the environment when the URL names only a user, and the TLS files."""
    env = os.environ if environ is None else environ
    settings = parse_broker_url(args.broker)
    if settings.username is not None and settings.password is None and env.get(PASSWORD_ENV):
        settings = replace(settings, password=env[PASSWORD_ENV])
    tls_files = bool(args.ca_file or args.cert_file or args.tls_insecure)
    if tls_files and not settings.tls:
        raise StreamerError(
            f"--ca-file, --cert-file and --tls-insecure need an mqtts:// broker, got {mask_url(args.broker)}"
        )
    files = {"--ca-file": args.ca_file, "--cert-file": args.cert_file, "--key-file": args.key_file}
    for flag, path in files.items():
        if path and not os.path.isfile(path):
            raise StreamerError(f"{flag} {path}: no such file")
    return replace(
        settings,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        tls_insecure=bool(args.tls_insecure),
    )


def run(cfg: LiveConfig, args: argparse.Namespace, console: Console) -> int:
    settings = broker_settings(args)
    console.rule(f"llm-sap watch: room {args.room} on {mask_url(settings.url)}")

    def offline(payload: dict[str, Any]) -> bool:
        is_status = payload.get("type") == "status"
        return bool(args.exit_when_offline) and is_status and payload["state"] == "offline"

    try:
        count = asyncio.run(watch(settings, args.room, console, until=offline))
    except Exception as exc:  # aiomqtt.MqttError and OSError: the broker, not the input
        if type(exc).__name__.startswith("Mqtt") or isinstance(exc, OSError):
            raise WatchError(f"broker {mask_url(settings.url)}: {exc}") from None
        raise
    console.rule(f"{count} messages")
    return 0
