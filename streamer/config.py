"""The service's section of the configuration tree (``[service]`` in TOML files)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from planner.config import LoggingConfig, PlannerConfig, Section
from streamer.frames import DEFAULT_FRAME_SIZE
from streamer.payloads import validate_room
from streamer.segmenter import SegmenterSettings


class MqttConfig(Section):
    broker: str | None = None  # mqtt://user:pass@host:port or mqtts://...; None = embedded broker
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    outbox_size: int = Field(1000, ge=1, le=1_000_000)
    publish_timeout_s: float = Field(1.0, gt=0, le=60)  # a slower PUBACK is logged (never a disconnect)
    # MQTT 5: the broker holds the Last Will this long and drops it if the service is back in time
    # (a broker restart, a network blip): no false "offline"; a dead service shows offline this late
    will_delay_s: int = Field(5, ge=0, le=300)
    client_id_prefix: str = "llm-sap"
    # the embedded broker's loopback port (without `broker`): 1883, or a free port (one warning line)
    # when 1883 is taken; 0 = always a free port
    embedded_port: int = Field(1883, ge=0, le=65535)


class WebConfig(Section):
    """The web app: WebRTC ingest (``POST /offer``) and the OR monitoring page (``GET /``)."""

    enabled: bool | None = None  # None: on when a stream's source is webrtc; true: also monitor the others
    bind: str = "127.0.0.1:8080"  # HOST:PORT ([::1]:8080 for IPv6; port 0 = any free port)
    token: str | None = None  # required on every endpoint; generated at start when bound off loopback
    cors_origins: tuple[str, ...] = ()  # origins allowed to call the API from other pages
    cert_file: str | None = None  # serve HTTPS (browsers share a camera only on https:// or localhost)
    key_file: str | None = None
    max_width: int = Field(1280, ge=16, le=3840)  # the page's capture constraints
    max_height: int = Field(720, ge=16, le=2160)
    max_fps: float = Field(25.0, gt=0, le=60)
    start_bitrate_kbps: int = Field(2000, ge=100, le=50_000)  # x-google-*-bitrate in the answer SDP
    min_bitrate_kbps: int = Field(1000, ge=50, le=50_000)
    max_bitrate_kbps: int = Field(4000, ge=100, le=50_000)
    client_queue: int = Field(256, ge=8, le=100_000)  # events buffered per page (oldest dropped)
    max_pages_per_room: int = Field(32, ge=1, le=10_000)  # open event streams per room (503 beyond)
    allowed_hosts: tuple[str, ...] = ()  # DNS names of this server (IP addresses and localhost always)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        split_bind(value)
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and (len(value) < 8 or any(c.isspace() for c in value)):
            raise ValueError("token must be at least 8 characters with no spaces")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"CORS origin {origin!r} must be like https://host[:port] (no path, no '*')")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both for HTTPS, or neither")
        return self

    @model_validator(mode="after")
    def _bitrates(self) -> WebConfig:
        rates = (self.min_bitrate_kbps, self.start_bitrate_kbps, self.max_bitrate_kbps)
        if not rates[0] <= rates[1] <= rates[2]:
            raise ValueError(f"bitrates must satisfy min <= start <= max kbps, got {rates}")
        return self


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def split_bind(bind: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) → (host, port); ValueError naming the value."""
    host, sep, port_text = bind.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bind address {bind!r} must be HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    return host, int(port_text)


class StreamConfig(Section):
    room: str
    source: str  # a file path, rtsp://..., synthetic, or webrtc
    recognizer: str | None = None  # default: service.recognizer

    @field_validator("room")
    @classmethod
    def _room(cls, value: str) -> str:
        return validate_room(value)


class ServiceConfig(Section):
    streams: tuple[StreamConfig, ...] = ()
    recognizer: str | None = None  # timeline:FILE[#VIDEO] or checkpoint:FILE
    recognizer_rate_hz: float = Field(2.0, gt=0, le=60)
    # a checkpoint trained on synthetic frames is refused on real video (file, RTSP, WebRTC) unless true
    force_recognizer: bool = False
    realtime: bool = True  # pace files by their timestamps, like a live feed
    frame_size: int = Field(DEFAULT_FRAME_SIZE, ge=16, le=1024)
    segmenter: SegmenterSettings = SegmenterSettings()  # for a pixel recognizer (noisy probabilities)
    # for the timeline oracle (clean one-hot input): no smoothing, a short confirmation
    oracle_segmenter: SegmenterSettings = SegmenterSettings(
        smoothing_s=0.0, confirm_s=0.5, compensate_lag=False
    )
    refresh_text: bool = True
    recommendation_ttl_s: float = Field(120.0, gt=0, le=86_400)  # at most a day (and finite)
    mqtt: MqttConfig = MqttConfig()
    web: WebConfig = WebConfig()

    @model_validator(mode="after")
    def _unique_rooms(self) -> ServiceConfig:
        rooms = [s.room for s in self.streams]
        twice = sorted({r for r in rooms if rooms.count(r) > 1})
        if twice:
            raise ValueError(f"room ids must be unique (they name the MQTT topics): {', '.join(twice)} twice")
        return self


class LiveConfig(Section):
    """What the live commands (serve, replay, demo) read: the service, the planner, logging.

    ``training.config.AppConfig`` extends it with the offline recipes; streaming code only ever
    sees this part, so ``streamer`` never imports ``training``."""

    service: ServiceConfig = ServiceConfig()
    planner: PlannerConfig = PlannerConfig()
    logging: LoggingConfig = LoggingConfig()
