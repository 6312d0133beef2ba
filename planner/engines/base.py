"""The contract every planning engine fulfils: rank the five actions; generate text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from planner.memory import NHFMemory


@dataclass(frozen=True)
class EngineSettings:
    """Options every model engine reads (each ignores what does not apply to it).

    The engine spec's argument (``transformers:PATH``) says which model; these say how to run it.
    """

    variant: Literal["indirect", "direct"] = "indirect"  # IndirNHFM (captions) or DirNHFM (frames)
    adapter: str | None = None  # a LoRA adapter folder (peft) on top of the model
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    option_orders: int = 1  # average option scores over this many letter orders (position bias)
    max_new_tokens: int = 256  # cap on the structured response
    captioner: str | None = None  # a Qwen2-VL checkpoint writing C_t for IndirNHFM (None: no captions)
    model_name: str | None = None  # served model name (OpenAI-compatible servers)
    tokenizer: str | None = None  # local tokenizer folder to render prompts (OpenAI-compatible servers)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key, if any
    timeout_s: float = 30.0  # per HTTP request
    retries: int = 2  # HTTP retries on connection errors and 5xx
    tensor_parallel_size: int = 1  # TensorRT-LLM

    def __post_init__(self) -> None:
        if self.variant not in ("indirect", "direct"):
            raise ValueError(f"variant must be 'indirect' or 'direct', got {self.variant!r}")
        if not 1 <= self.option_orders <= 120:
            raise ValueError(f"option_orders must be in 1..120, got {self.option_orders}")
        if not 1 <= self.max_new_tokens <= 32768:
            raise ValueError(f"max_new_tokens must be in 1..32768, got {self.max_new_tokens}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        timeout_ok = math.isfinite(self.timeout_s) and 0 < self.timeout_s <= 3600
        if not timeout_ok or not 0 <= self.retries <= 100 or self.tensor_parallel_size < 1:
            raise ValueError(
                "need timeout_s in (0, 3600], retries in 0..100, tensor_parallel_size >= 1; got "
                f"{self.timeout_s}, {self.retries}, {self.tensor_parallel_size}"
            )


#: The near-clip inputs an engine can read (``PlanningEngine.reads_near``).
KEYFRAMES, CAPTION = "keyframes", "caption"


def near_inputs(variant: str) -> frozenset[str]:
    """What a model engine of this NHFM variant reads of the near clip."""
    return frozenset({KEYFRAMES}) if variant == "direct" else frozenset({CAPTION})


@runtime_checkable
class PlanningEngine(Protocol):
    """A source of next-action scores and of the structured response text.

    ``rank`` is the fast path and must always be valid: it returns natural-log scores for
    all five actions from one scoring step (never from parsing generated text). ``generate``
    writes the structured response (see ``planner.response``) and may stream it in chunks.
    Both may block: callers run them off the event loop and under a deadline.
    """

    name: str  # engine kind, e.g. "prior", "transformers"
    model: str  # what wrote the scores: a model path or id, or the prior's settings
    # Capabilities, declared by each engine (never inferred from its name):
    instant: bool  # ranks in well under a millisecond: run inline, no worker thread, no deadline
    needs_model: bool  # loads model weights (or calls a model server) to rank
    batch_rank: bool  # has ``rank_batch(memories)``: several rooms' requests in one forward pass
    #: what the ranking reads of the near clip besides its label: "keyframes" (DirNHFM),
    #: "caption" (IndirNHFM); empty for label-only engines. The live pipeline re-plans a clip
    #: only when one of these changed.
    reads_near: frozenset[str]

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        """Log-scores (natural log, higher is better) for each of the five actions."""
        ...

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        """The structured response as text chunks."""
        ...

    def close(self) -> None:
        """Release threads, sessions and memory."""
        ...
