"""``trtllm:PATH``: TensorRT-LLM's LLM API on a GPU (extra ``trtllm``; never imported otherwise).

- ``LLM(model=PATH, tensor_parallel_size=..., kv_cache_config=KvCacheConfig(enable_block_reuse=True))``:
  block reuse is TensorRT-LLM's prefix cache, so the system prefix's KV blocks are shared by every
  request. It is OFF for Qwen2-VL (multimodal): TensorRT-LLM's own multimodal quickstart forces it
  off, and reuse on multimodal requests has been reported to give wrong outputs.
- ranking: ``SamplingParams(max_tokens=1, logprobs=K)``; each output's ``logprobs[0]`` maps token
  ids to ``Logprob(logprob, rank)``; the letters' ids come from the checkpoint's tokenizer, and a
  letter outside the top K gets a floor log-prob.
- LoRA (``settings.adapter``): ``LoraConfig(lora_dir=[...])`` on the LLM and a ``LoRARequest`` per call.
- text: ``generate_async(..., streaming=True)``, read synchronously, ``text_diff`` per step.
- top-k log-probs: the PyTorch backend returned only the sampled token's log-prob before the
  releases whose sampling page lists "TopK LogProbs" (1.3 release candidates on); the extra
  pins ``tensorrt-llm>=1.3.0rc24`` and ``check_topk_logprobs`` probes the engine at load, so an
  older build fails clearly instead of ranking four letters at the floor value.

Checked against the TensorRT-LLM documentation (LLM API reference, "Additional Outputs", LoRA and
KV-cache pages, ``executor/result.py``) but NEVER RUN HERE: this machine has no GPU. Lines marked
``UNVERIFIED`` rely on details the documentation leaves open.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from planner.engines.base import EngineSettings, near_inputs
from planner.engines.chatml import Renderer, make_renderer
from planner.engines.options import DEFAULT_FLOOR, action_scores, letter_token_ids, scoring_prompts
from planner.engines.vision import images_in, to_pil
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.prompts import APPrompts, Prompt

log = structlog.get_logger(__name__)

MISSING = "tensorrt_llm is not installed (pip install llm-sap[trtllm] on a CUDA machine)"
TOP_LOGPROBS = 20
VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})


def import_trtllm() -> ModuleType:
    """``tensorrt_llm``, or a clear ``EngineError`` when it is absent."""
    try:
        import tensorrt_llm
    except ImportError as exc:
        raise EngineError(MISSING) from exc
    return tensorrt_llm


def checkpoint_model_type(path: str | Path) -> str:
    config = Path(path) / "config.json"
    if not config.is_file():
        raise EngineError(f"no Hugging Face checkpoint at {str(path)!r} (config.json not found)")
    return str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))


def llm_options(settings: EngineSettings, model_type: str) -> dict[str, Any]:
    """Plain-value options for ``LLM(...)`` (kept pure so they are tested without a GPU)."""
    is_vl = model_type in VL_MODEL_TYPES
    return {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "dtype": "auto" if settings.dtype == "float32" else settings.dtype,  # GPUs serve half precision
        "enable_block_reuse": not is_vl,
        "is_vl": is_vl,
    }


def letter_logprobs_from_topk(
    top: Mapping[int, Any], letter_ids: Mapping[str, int], floor: float = DEFAULT_FLOOR
) -> dict[str, float]:
    """Letter log-probs from one position's ``{token_id: Logprob | float}``; missing letters get a
    floor below every listed value."""

    def value(v: Any) -> float:
        return float(getattr(v, "logprob", v))

    listed = [value(v) for v in top.values() if math.isfinite(value(v))]
    floor = min([floor, *(v - 1.0 for v in listed)])
    out = {}
    for letter, token_id in letter_ids.items():
        v = top.get(token_id)
        out[letter] = value(v) if v is not None and math.isfinite(value(v)) else floor
    return out


def check_topk_logprobs(output: Any, k: int) -> int:
    """How many log-probs the first generated position carries; ``EngineError`` when fewer than ``k``
    (a release whose backend returns only the sampled token's log-prob cannot rank options)."""
    got = len(_first_topk(output))
    if got < k:
        raise EngineError(
            f"TensorRT-LLM returned {got} log-prob(s) per position where {k} were asked: this release "
            "or backend does not return top-k log-probs; install tensorrt-llm>=1.3.0rc24 (PyTorch "
            "backend with TopK LogProbs) or serve the model with trtllm-serve and use openai:URL"
        )
    return got


def _first_topk(output: Any) -> Mapping[int, Any]:
    """The first generated token's ``{token_id: Logprob}`` of a ``RequestOutput``."""
    logprobs = output.outputs[0].logprobs
    if not logprobs or not isinstance(logprobs[0], Mapping):
        raise EngineError(
            f"TensorRT-LLM returned no top-k log-probs for the first token: {str(logprobs)[:120]}"
        )
    first: Mapping[int, Any] = logprobs[0]
    return first


def _import_first(*candidates: str) -> Any:
    """``module:attr`` from the first module that has it (the LLM API moved names between releases)."""
    import importlib

    for candidate in candidates:
        module_name, _, attr = candidate.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
    raise EngineError(f"tensorrt_llm has none of {', '.join(candidates)} (unsupported version?)")


class TrtllmEngine:
    name = "trtllm"
    instant = False
    needs_model = True
    batch_rank = False

    def __init__(
        self,
        llm: Any,
        sampling_params: type,
        settings: EngineSettings,
        render: Renderer,
        letter_ids: dict[str, int],
        is_vl: bool,
        lora_request: Any | None,
        model: str,
    ) -> None:
        self.llm = llm
        self.sampling_params = sampling_params
        self.settings = settings
        self.reads_near = near_inputs(settings.variant)
        self.render = render
        self.letter_ids = letter_ids
        self.is_vl = is_vl
        self.lora_request = lora_request
        self.model = model

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        llm = self._open_llm()
        prompts = scoring_prompts(memory, self.settings.variant, self.settings.option_orders)
        # UNVERIFIED: whether returned logprobs are taken before or after temperature; 1.0 makes both equal.
        params = self.sampling_params(max_tokens=1, temperature=1.0, logprobs=TOP_LOGPROBS)
        outputs = llm.generate([self._input(p) for p in prompts], params, **self._lora(len(prompts)))
        per_prompt = [letter_logprobs_from_topk(_first_topk(o), self.letter_ids) for o in outputs]
        return action_scores(per_prompt, prompts)

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        llm = self._open_llm()
        cap = max(1, min(max_tokens, self.settings.max_new_tokens))
        params = self.sampling_params(max_tokens=cap, temperature=0.0)  # greedy, as in the docs' example
        prompt = self._input(APPrompts.plan(memory, self.settings.variant))
        lora = self._lora(1).get("lora_request")
        kwargs = {"lora_request": lora[0]} if lora else {}
        for step in llm.generate_async(prompt, params, streaming=True, **kwargs):  # sync iteration works
            text = step.outputs[0].text_diff
            if text:
                yield text

    def close(self) -> None:
        if self.llm is not None:
            shutdown = getattr(self.llm, "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None

    def _open_llm(self) -> Any:
        if self.llm is None:
            raise EngineError(f"trtllm engine for {self.model} is closed")
        return self.llm

    def _input(self, prompt: Prompt) -> Any:
        text = self.render(prompt.messages)
        refs = images_in(list(prompt.messages))
        if not refs:
            return text
        # UNVERIFIED for TensorRT-LLM: the prompt-dict shape its input processors take (as vLLM's).
        return {"prompt": text, "multi_modal_data": {"image": [to_pil(r) for r in refs]}}

    def _lora(self, count: int) -> dict[str, Any]:
        return {"lora_request": [self.lora_request] * count} if self.lora_request is not None else {}


def create(arg: str, prior: SequencePrior, settings: EngineSettings) -> TrtllmEngine:
    """``trtllm:PATH`` (a Hugging Face checkpoint folder or a TensorRT-LLM engine folder)."""
    if not arg:
        raise EngineError("the trtllm engine needs a checkpoint folder: trtllm:PATH")
    trt = import_trtllm()
    model_type = checkpoint_model_type(arg)
    opts = llm_options(settings, model_type)
    if settings.variant == "direct" and not opts["is_vl"]:
        raise EngineError(f"variant 'direct' (DirNHFM) needs a Qwen2-VL checkpoint; {arg} is {model_type}")
    kv_cache_config = _import_first("tensorrt_llm.llmapi:KvCacheConfig")
    kwargs: dict[str, Any] = {
        "model": arg,
        "tensor_parallel_size": opts["tensor_parallel_size"],
        "dtype": opts["dtype"],
        "kv_cache_config": kv_cache_config(enable_block_reuse=opts["enable_block_reuse"]),
    }
    lora_request = None
    if settings.adapter:
        lora_config = _import_first(
            "tensorrt_llm.lora_helper:LoraConfig", "tensorrt_llm.lora_manager:LoraConfig"
        )
        lora_cls = _import_first(
            "tensorrt_llm.executor.request:LoRARequest", "tensorrt_llm.llmapi:LoRARequest"
        )
        rank = int(json.loads((Path(settings.adapter) / "adapter_config.json").read_text()).get("r", 8))
        kwargs["lora_config"] = lora_config(
            lora_dir=[settings.adapter], max_lora_rank=rank, max_loras=1, max_cpu_loras=1
        )
        lora_request = lora_cls("planner-adapter", 1, settings.adapter)
    llm = trt.LLM(**kwargs)
    render = make_renderer(settings.tokenizer or arg)
    from transformers import AutoTokenizer

    letter_ids = letter_token_ids(AutoTokenizer.from_pretrained(settings.tokenizer or arg), arg)
    probe = trt.SamplingParams(max_tokens=1, temperature=1.0, logprobs=TOP_LOGPROBS)
    check_topk_logprobs(llm.generate([render([{"role": "user", "content": "A"}])], probe)[0], TOP_LOGPROBS)
    log.info(
        "engine.trtllm_ready", model=arg, block_reuse=opts["enable_block_reuse"], lora=bool(lora_request)
    )
    description = f"{arg}+lora:{settings.adapter}" if settings.adapter else arg
    return TrtllmEngine(
        llm, trt.SamplingParams, settings, render, letter_ids, opts["is_vl"], lora_request, description
    )
