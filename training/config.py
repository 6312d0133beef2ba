"""The one typed configuration tree: defaults in code, overridden by TOML files and flags.

Precedence: defaults < ``--config`` files (in order) < ``--set key.path=value`` flags <
dedicated flags (``--planner``, ...). An unknown key or a bad value raises ConfigError with
one line naming the key and the value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from planner.config import Section
from streamer.config import LiveConfig
from training.exceptions import ConfigError
from training.recipes import DistillConfig, GrpoConfig, SftConfig


class EvaluateConfig(Section):
    split: Literal["train", "test", "all"] = "test"
    # the planner's history: each sample's own Distant/Nearest fields (the paper's setting), or the
    # clips' Action sequence (what a live recognizer sees)
    history: Literal["sample", "actions"] = "sample"


class TrainingConfig(Section):
    evaluate: EvaluateConfig = EvaluateConfig()
    cv_folds: int = Field(0, ge=0, description="0 = leave-one-video-out")
    distill: DistillConfig = DistillConfig()
    sft: SftConfig = SftConfig()
    grpo: GrpoConfig = GrpoConfig()


class AppConfig(LiveConfig):
    """The whole tree: the live parts (service, planner, logging) plus the offline recipes."""

    training: TrainingConfig = TrainingConfig()


def load_config(files: Iterable[Path | str] = (), overrides: Iterable[str] = ()) -> AppConfig:
    tree: dict[str, Any] = {}
    for file in files:
        _merge(tree, _read_toml(Path(file)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"config override {item!r} must look like key.path=value")
        _merge(tree, _nest(key.strip().split("."), _parse_value(value.strip())))
    return validate_config(tree)


def validate_config(tree: Mapping[str, Any]) -> AppConfig:
    try:
        return AppConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        raise ConfigError(f"config error: {key}{shown}: {err['msg']}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text (a binary file?)") from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML ({exc})") from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
