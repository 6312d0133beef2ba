"""``transformers:PATH``: a local Qwen2 / Qwen2.5 or Qwen2-VL checkpoint, on CPU or GPU.

- ranking: one forward pass over the option-scoring prompt(s) (one per letter order, batched)
  on top of the cached system prefix; next-token log-probs of the letters A-E, renormalised
  over the five letters, mapped back to actions and averaged over the orders.
- text: the structured response (APPrompts.plan), decoded greedily and streamed, capped.
- DirNHFM (``variant="direct"``): a Qwen2-VL checkpoint sees the current clip's keyframes.
- IndirNHFM with ``captioner=PATH``: a Qwen2-VL captioner writes C_t first (cached per clip).

Every call blocks; the planner runs ``rank`` in its worker thread, never on the event loop.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from planner.engines.base import EngineSettings, near_inputs
from planner.engines.captioner import Captioner
from planner.engines.hf_loading import LoadedModel, load_model
from planner.engines.options import action_scores, letter_token_ids, scoring_prompts
from planner.engines.prefix_cache import PrefixCachedLM
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.prompts import APPrompts, system_message

log = structlog.get_logger(__name__)

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class TransformersEngine:
    name = "transformers"
    instant = False
    needs_model = True
    batch_rank = True

    def __init__(self, lm: PrefixCachedLM, settings: EngineSettings, captioner: Captioner | None = None):
        self._lm: PrefixCachedLM | None = lm
        self.settings = settings
        self.captioner = captioner
        self.reads_near = near_inputs(settings.variant)
        self.model = lm.loaded.description
        self.letter_ids = letter_token_ids(lm.tokenizer, lm.loaded.path)
        tok = lm.tokenizer
        self.stop_ids = [int(i) for i in (tok.convert_tokens_to_ids(t) for t in STOP_TOKENS) if i is not None]
        self.last_generated_tokens = 0

    @property
    def lm(self) -> PrefixCachedLM:
        if self._lm is None:
            raise EngineError(f"transformers engine for {self.model} is closed")
        return self._lm

    def rank(self, memory: NHFMemory, *, use_cache: bool = True) -> dict[str, float]:
        """Action log-scores from one batched scoring step (``use_cache=False``: full recompute)."""
        return self.rank_batch([memory], use_cache=use_cache)[0]

    def rank_batch(self, memories: Sequence[NHFMemory], *, use_cache: bool = True) -> list[dict[str, float]]:
        """Several memories (e.g. several rooms' requests) scored in one forward pass."""
        lm = self.lm
        prompt_sets = [
            scoring_prompts(self._prepare(m), self.settings.variant, self.settings.option_orders)
            for m in memories
        ]
        encoded = [lm.encode(p.messages) for prompts in prompt_sets for p in prompts]
        logprobs = lm.next_token_logprobs(encoded, use_cache=use_cache)
        rows = [{letter: float(row[i]) for letter, i in self.letter_ids.items()} for row in logprobs]
        out, start = [], 0
        for prompts in prompt_sets:
            out.append(action_scores(rows[start : start + len(prompts)], prompts))
            start += len(prompts)
        return out

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        """Stream the structured response; at most ``min(max_tokens, settings.max_new_tokens)`` tokens."""
        lm = self.lm
        memory = self._prepare(memory)
        enc = lm.encode(APPrompts.plan(memory, self.settings.variant).messages)
        cap = max(1, min(max_tokens, self.settings.max_new_tokens))
        ids: list[int] = []
        emitted = ""
        self.last_generated_tokens = 0
        for token in lm.greedy(enc, cap, self.stop_ids):
            ids.append(token)
            self.last_generated_tokens = len(ids)
            text = lm.decode(ids)
            if text.endswith("\ufffd") or not text.startswith(emitted):
                continue  # an incomplete UTF-8 sequence: wait for the next token
            if len(text) > len(emitted):
                yield text[len(emitted) :]
                emitted = text
        text = lm.decode(ids)
        if text != emitted and text.startswith(emitted):
            yield text[len(emitted) :]

    def take_captioner(self) -> Captioner | None:
        """Hand the captioner to the live caption worker: from now on ranking never captions
        inline (a plan uses the caption its memory carries, or says there is none)."""
        captioner, self.captioner = self.captioner, None
        return captioner

    def close(self) -> None:
        """Drop the model, its cache and the captioner's; later calls raise ``EngineError``."""
        if self._lm is None:
            return
        self._lm = None
        self.captioner = None
        gc.collect()
        log.info("engine.closed", engine=self.name, model=self.model)

    def _prepare(self, memory: NHFMemory) -> NHFMemory:
        if self.captioner is not None and self.settings.variant == "indirect":
            return self.captioner.attach(memory)
        return memory


def create(arg: str, prior: SequencePrior, settings: EngineSettings) -> TransformersEngine:
    """``transformers:PATH``; ``settings.adapter`` adds a LoRA adapter, ``settings.captioner`` C_t."""
    if not arg:
        raise EngineError("the transformers engine needs a checkpoint folder: transformers:PATH")
    loaded = load_model(arg, settings, settings.adapter)
    if settings.variant == "direct" and not loaded.is_vl:
        raise EngineError(
            f"variant 'direct' (DirNHFM) needs a Qwen2-VL checkpoint; {arg} is {loaded.model_type}"
        )
    lm = PrefixCachedLM(loaded, [system_message()], settings.threads)
    captioner = None
    if settings.captioner and settings.variant == "indirect":
        captioner = Captioner(_captioner_lm(settings.captioner, loaded, lm, settings))
    return TransformersEngine(lm, settings, captioner)


def _captioner_lm(
    path: str, loaded: LoadedModel, lm: PrefixCachedLM, settings: EngineSettings
) -> PrefixCachedLM:
    """The planner's own model when it is the captioner checkpoint too, else a second model."""
    if loaded.is_vl and not loaded.adapter and Path(path).resolve() == Path(loaded.path).resolve():
        return lm
    return PrefixCachedLM(load_model(path, settings), [system_message()], settings.threads)
