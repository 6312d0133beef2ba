"""Command-line flags shared by every command that plans (evaluate, select-fusion, serve, replay,
demo): ``--planner`` and ``--adapter``, and the turning of flags into config overrides."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping

#: flags every planning command shares, and the config keys they set
PLANNER_FLAGS: dict[str, str] = {"planner": "planner.engine", "adapter": "planner.engine_settings.adapter"}


def add_planner_arguments(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    engines = "prior, prior:FILE, learned, transformers:PATH, openai:URL, trtllm:PATH"
    from planner.config import PlannerConfig

    shipped = PlannerConfig.model_fields["engine"].default
    default = "" if required else f" (default: {shipped}, or the config's planner.engine)"
    p.add_argument("--planner", required=required, help=f"engine spec: {engines}{default}")
    p.add_argument("--adapter", help="a LoRA adapter folder for a model engine (peft; default: none)")


def flag_overrides(args: argparse.Namespace, keys: Mapping[str, str]) -> list[str]:
    """``--flag VALUE`` → ``config.key=VALUE`` for each flag that was given (values TOML-encoded)."""
    out = []
    for flag, key in keys.items():
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={_toml(value)}")
    return out


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string
