"""Load a local Qwen2 / Qwen2.5 / Qwen2-VL checkpoint (and a LoRA adapter) by path, for inference.

The config's ``model_type`` picks the class: vision-language types load through
``AutoModelForImageTextToText`` with a processor rebuilt from the folder (see ``vision``),
everything else through ``AutoModelForCausalLM``. Nothing is downloaded: the path must exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from planner.engines.base import EngineSettings
from planner.exceptions import EngineError

log = structlog.get_logger(__name__)

VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
class LoadedModel:
    """A model ready for inference, with what it needs to turn chat messages into inputs."""

    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    processor: Any | None  # Qwen2-VL processor (None for text models)
    path: str
    model_type: str
    adapter: str | None = None

    @property
    def is_vl(self) -> bool:
        return self.processor is not None

    @property
    def description(self) -> str:
        return f"{self.path}+lora:{self.adapter}" if self.adapter else self.path


def torch_dtype(name: str) -> Any:
    """The torch dtype for a settings name (``auto``: the checkpoint's own)."""
    import torch

    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise EngineError(f"dtype must be float32, bfloat16, float16 or auto, got {name!r}")
    return getattr(torch, _DTYPES[name])


def load_model(path: str | Path, settings: EngineSettings, adapter: str | None = None) -> LoadedModel:
    """Load the checkpoint at ``path`` (and ``adapter``, merged in) on ``settings.device``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise EngineError(f"no model checkpoint at {str(path)!r} (config.json not found)")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    config = AutoConfig.from_pretrained(folder)
    model_type = str(config.model_type)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    auto = AutoModelForImageTextToText if model_type in VL_MODEL_TYPES else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(folder, dtype=torch_dtype(settings.dtype))
    except (ValueError, OSError) as exc:
        raise EngineError(f"cannot load {model_type} checkpoint at {str(path)!r}: {exc}") from exc
    if adapter:
        model = _merge_adapter(model, adapter)
    model.to(settings.device).eval()
    processor = None
    if model_type in VL_MODEL_TYPES:
        from planner.engines.vision import load_processor

        processor = load_processor(folder, tokenizer)
    log.info(
        "engine.model_loaded",
        path=str(path),
        model_type=model_type,
        adapter=adapter,
        dtype=str(model.dtype),
        device=settings.device,
        threads=torch.get_num_threads(),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return LoadedModel(model, tokenizer, processor, str(path), model_type, adapter)


def _merge_adapter(model: Any, adapter: str) -> Any:
    """Apply a peft LoRA adapter and merge it into the weights (faster inference, plain model)."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise EngineError(f"no LoRA adapter at {adapter!r} (adapter_config.json not found)")
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise EngineError("a LoRA adapter needs peft (pip install llm-sap[models])") from exc
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()
