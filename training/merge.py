"""Merge a LoRA adapter into its base: a plain checkpoint (+ tokenizer) for TensorRT-LLM or vLLM.

The merged folder is a normal Hugging Face checkpoint (``config.json``, safetensors shards,
tokenizer; the image processor config too for Qwen2-VL), so ``trtllm-build`` (via TensorRT-LLM's
``convert_checkpoint.py``), ``trtllm-serve`` / the LLM API, ``vllm serve`` and this project's
``transformers:PATH`` engine take it as they take the base. Before it is trusted, the merged model
is reloaded from disk and its logits on a probe prompt (a real option-scoring prompt) are compared
with base + adapter unmerged; the max absolute difference is reported and must stay within the
tolerance (default: 1e-3 in float32, 0.5 in bf16/fp16, whose rounding is that coarse). For scale:
on a ~1000-token prompt, float32 itself differs from a float64 forward by ~5e-5 in the logits.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from planner.atomic import apply_open_modes
from planner.memory import NHFMemory
from planner.prompts import APPrompts
from training.exceptions import TrainingError, UsageError
from training.trainer_common import VL_MODEL_TYPES

log = structlog.get_logger(__name__)

DEFAULT_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.5}
#: Files copied from the base folder when present (the VL image processor, generation settings).
EXTRA_FILES = ("preprocessor_config.json", "generation_config.json", "chat_template.jinja")


class MergeError(TrainingError):
    """The merge cannot run, or the merged model does not reproduce base + adapter."""


@dataclass(frozen=True)
class MergeResult:
    out: Path
    max_abs_diff: float  # over every position of the probe prompt
    max_abs_diff_next: float  # at its last position: the next-token logits the planner ranks with
    tolerance: float
    probe_tokens: int
    seconds: float


def probe_text(tokenizer: Any) -> str:
    """A real planner prompt (the option-scoring question), rendered with the model's chat template."""
    memory = NHFMemory.from_history(["Tissue Retraction", "Dissection"], "Coagulation")
    messages = list(APPrompts.options(memory).messages)
    text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def _load_base(path: Path, dtype: Any) -> tuple[Any, str]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    model_type = str(AutoConfig.from_pretrained(path).model_type)
    auto = AutoModelForImageTextToText if model_type in VL_MODEL_TYPES else AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=dtype).eval(), model_type


def _logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def merge_adapter(
    base: Path,
    adapter: Path,
    out: Path,
    *,
    dtype: str = "float32",
    tolerance: float | None = None,
    max_shard_size: str = "5GB",
) -> MergeResult:
    """Merge, save, reload and verify; raises MergeError when the logits differ beyond ``tolerance``."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    if not (base / "config.json").is_file():
        raise UsageError(f"--base {base}: no model checkpoint there (config.json not found)")
    if not (adapter / "adapter_config.json").is_file():
        raise UsageError(f"--adapter {adapter}: no LoRA adapter there (adapter_config.json not found)")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty; choose a new folder")
    if dtype not in DEFAULT_TOLERANCE:
        raise UsageError(f"--dtype must be one of {', '.join(DEFAULT_TOLERANCE)}, got {dtype!r}")
    tol = DEFAULT_TOLERANCE[dtype] if tolerance is None else tolerance
    t0 = time.perf_counter()
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(probe_text(tokenizer), return_tensors="pt", add_special_tokens=False)["input_ids"]
    model, model_type = _load_base(base, torch_dtype)
    peft_model = PeftModel.from_pretrained(model, str(adapter)).eval()
    expected = _logits(peft_model, ids)  # base + adapter, unmerged
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    for name in EXTRA_FILES:
        if (base / name).is_file() and not (out / name).exists():
            shutil.copy2(base / name, out / name)
    apply_open_modes(out)  # safetensors writes 0o600: vLLM / trtllm-serve may run as another user
    del peft_model, merged, model
    reloaded, _ = _load_base(out, torch_dtype)
    delta = (_logits(reloaded, ids) - expected).abs()
    diff, diff_next = float(delta.max()), float(delta[0, -1].max())
    seconds = round(time.perf_counter() - t0, 2)
    result = MergeResult(out, diff, diff_next, tol, int(ids.shape[1]), seconds)
    log.info("merge.verified", out=str(out), model_type=model_type, max_abs_diff=diff, next_token=diff_next)
    if diff > tol:
        raise MergeError(
            f"merged logits differ from base + adapter by {diff:.3g} (> tolerance {tol:g}) on the probe "
            f"prompt; {out} is not a faithful merge"
        )
    return result
