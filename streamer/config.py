"""The service's section of the configuration tree (``[service]`` in TOML files)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamer.payloads import validate_room
from streamer.segmenter import SegmenterSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    broker: str | None = None  # mqtt://user:pass@host:port or mqtts://...; None = embedded broker
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    outbox_size: int = Field(1000, ge=1, le=1_000_000)
    publish_timeout_s: float = Field(1.0, gt=0, le=60)
    client_id_prefix: str = "llm-sap"


class StreamConfig(_Section):
    room: str
    source: str  # a file path, rtsp://..., synthetic, or webrtc
    recognizer: str | None = None  # default: service.recognizer

    @field_validator("room")
    @classmethod
    def _room(cls, value: str) -> str:
        return validate_room(value)


class ServiceConfig(_Section):
    streams: tuple[StreamConfig, ...] = ()
    recognizer: str | None = None  # timeline:FILE[#VIDEO] or checkpoint:FILE
    recognizer_rate_hz: float = Field(2.0, gt=0, le=60)
    realtime: bool = True  # pace files by their timestamps, like a live feed
    frame_size: int = Field(224, ge=16, le=1024)
    segmenter: SegmenterSettings = SegmenterSettings()  # for a pixel recognizer (noisy probabilities)
    # for the timeline oracle (clean one-hot input): no smoothing, a short confirmation
    oracle_segmenter: SegmenterSettings = SegmenterSettings(
        smoothing_s=0.0, confirm_s=0.5, compensate_lag=False
    )
    refresh_text: bool = True
    recommendation_ttl_s: float = Field(120.0, gt=0)
    mqtt: MqttConfig = MqttConfig()
