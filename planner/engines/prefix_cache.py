"""A causal LM whose static prompt prefix is prefilled once into a KV cache and reused.

The prefix is the system message rendered with the model's chat template. Each request's chat is
rendered in full, tokenized, and checked: when its first tokens are exactly the prefix's tokens,
only the rest (the suffix) runs, on top of the cached prefix; otherwise the whole prompt runs
and the mismatch is logged. One lock guards every model call, so ranking (the planner's worker
thread) and text generation (another thread) can share the model; generation takes the lock
per token, so a ranking request waits for at most one decoding step.

Qwen2-VL keeps multimodal RoPE state on the model (``rope_deltas``); this class always passes
explicit position ids computed on the full sequence, so that state is never read.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import torch

from planner.engines.hf_loading import LoadedModel
from planner.engines.vision import images_in, to_pil

log = structlog.get_logger(__name__)


@dataclass
class Encoded:
    """One tokenized prompt: full ids, and the vision inputs for Qwen2-VL."""

    ids: torch.Tensor  # (L,) int64, the whole prompt
    cacheable: bool  # the prompt starts with exactly the cached prefix's tokens
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    mm_token_type_ids: torch.Tensor | None = None  # (L,)
    positions: torch.Tensor | None = field(default=None, repr=False)  # (3, L) M-RoPE ids, VL only


class PrefixCachedLM:
    """Scores next tokens and decodes greedily, reusing the KV cache of a fixed message prefix."""

    def __init__(self, loaded: LoadedModel, prefix_messages: Sequence[dict[str, Any]], threads: int | None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.threads = threads
        self.lock = threading.Lock()  # model calls
        self._tok_lock = threading.Lock()  # fast tokenizers fail with "Already borrowed" when shared
        self.prefix_messages = list(prefix_messages)
        self.prefix_text = self.render(self.prefix_messages, add_generation_prompt=False)
        ids = self.tokenizer(self.prefix_text, add_special_tokens=False)["input_ids"]
        self.prefix_ids = torch.tensor(ids, dtype=torch.long)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.fallbacks = 0  # prompts that did not start with the prefix's tokens
        self._boundary = self._split_boundary()
        self._cache: Any = None
        with self.lock:
            self._prefill()

    @property
    def prefix_len(self) -> int:
        return int(self.prefix_ids.numel())

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        text: str = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return text

    def encode(self, messages: Sequence[dict[str, Any]]) -> Encoded:
        """Render and tokenize a chat (images included); check it extends the cached prefix."""
        text = self.render(messages)
        refs = images_in(list(messages))
        if refs and self.loaded.processor is None:
            raise ValueError(f"{self.loaded.path} is a text model: it cannot take {len(refs)} keyframes")
        enc: Encoded
        if self.loaded.processor is not None:
            images = [to_pil(r) for r in refs] or None
            with self._tok_lock:
                out = self.loaded.processor(text=[text], images=images, return_tensors="pt")
            enc = Encoded(
                ids=out["input_ids"][0],
                cacheable=False,
                pixel_values=out.get("pixel_values"),
                image_grid_thw=out.get("image_grid_thw"),
                mm_token_type_ids=out["mm_token_type_ids"][0],
            )
            enc.positions = self._mrope_positions(enc)
        elif self._boundary and text.startswith(self.prefix_text + self._boundary):
            # only the suffix is tokenized: exact, as checked in _split_boundary
            rest = self._tokenize(text[len(self.prefix_text) :])
            return Encoded(
                ids=torch.cat([self.prefix_ids, torch.tensor(rest, dtype=torch.long)]), cacheable=True
            )
        else:
            enc = Encoded(ids=torch.tensor(self._tokenize(text), dtype=torch.long), cacheable=False)
        n = self.prefix_len
        enc.cacheable = enc.ids.numel() > n and torch.equal(enc.ids[:n], self.prefix_ids)
        if not enc.cacheable:
            self.fallbacks += 1
            log.warning(
                "engine.prefix_mismatch", model=self.loaded.path, prefix_tokens=n, fallbacks=self.fallbacks
            )
        return enc

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text, special tokens dropped."""
        with self._tok_lock:
            text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    @torch.inference_mode()
    def next_token_logprobs(self, batch: Sequence[Encoded], use_cache: bool = True) -> torch.Tensor:
        """(B, V) float32 log-probabilities of the token after each prompt, in one forward pass."""
        use_cache = use_cache and all(e.cacheable for e in batch)
        start = self.prefix_len if use_cache else 0
        rows = [e.ids[start:] for e in batch]
        lengths = [int(r.numel()) for r in rows]
        input_ids = torch.full((len(rows), max(lengths)), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: real tokens never attend to the pads after them
            input_ids[i, : r.numel()] = r
        kwargs = self._vision_kwargs(batch, start, input_ids.shape[1])
        keep = torch.tensor(lengths).view(-1, 1) - 1
        with self.lock:
            self._set_threads()
            if not use_cache:
                out = self.model(input_ids=input_ids, use_cache=False, logits_to_keep=keep, **kwargs)
            else:
                out = self._on_prefix(input_ids, keep, kwargs)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)

    def greedy(self, enc: Encoded, max_tokens: int, stop_ids: Sequence[int]) -> Iterator[int]:
        """Greedy decoding, one token id at a time; the lock is held per step, never across a yield."""
        start = self.prefix_len if enc.cacheable else 0
        input_ids = enc.ids[start:].view(1, -1)
        kwargs = self._vision_kwargs([enc], start, input_ids.shape[1])
        last_pos = None if enc.positions is None else enc.positions[:, -1].view(3, 1, 1)
        with self.lock, torch.inference_mode():
            self._set_threads()
            cache = copy.deepcopy(self._cache) if enc.cacheable else None
            out = self.model(
                input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1, **kwargs
            )
            cache = out.past_key_values
        for _ in range(max_tokens):
            token = int(out.logits[0, -1].argmax())
            if token in stop_ids:
                return
            yield token
            step: dict[str, Any] = {}
            if last_pos is not None:
                last_pos = last_pos + 1
                step["position_ids"] = last_pos
            with self.lock, torch.inference_mode():
                self._set_threads()
                out = self.model(
                    input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True, **step
                )

    # ---- internals ---------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[int]:
        with self._tok_lock:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _split_boundary(self) -> str | None:
        """The special token every suffix starts with, if tokenizing prefix and suffix apart is exact.

        Special tokens split the text before normalisation and pre-tokenisation, so when the suffix
        starts with one (``<|im_start|>`` for ChatML), prefix ids + suffix ids == full ids; this is
        checked here on a probe prompt, and each request then tokenizes only its suffix.
        """
        full = self.render([*self.prefix_messages, {"role": "user", "content": "probe"}])
        rest = full[len(self.prefix_text) :]
        specials = [t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special]
        starts = [t for t in specials if rest.startswith(t)]
        if not full.startswith(self.prefix_text) or not starts:
            log.warning(
                "engine.prefix_split_unchecked",
                model=self.loaded.path,
                reason="no special token at the split",
            )
            return None
        if self.prefix_ids.tolist() + self._tokenize(rest) != self._tokenize(full):
            log.warning(
                "engine.prefix_split_unchecked",
                model=self.loaded.path,
                reason="prefix + suffix ids != full ids",
            )
            return None
        return max(starts, key=len)

    def _prefill(self) -> None:
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.config)
        kwargs: dict[str, Any] = {}
        if self.loaded.is_vl:
            pos = torch.arange(self.prefix_len).view(1, 1, -1).expand(3, 1, -1)
            kwargs["position_ids"] = pos
        with torch.inference_mode():
            self._set_threads()
            self.model(
                input_ids=self.prefix_ids.view(1, -1), past_key_values=self._cache, use_cache=True, **kwargs
            )
        log.info(
            "engine.prefix_cached",
            model=self.loaded.path,
            prefix_tokens=self.prefix_len,
            suffix_only_tokenizing=self._boundary is not None,
        )

    def _on_prefix(self, input_ids: torch.Tensor, keep: torch.Tensor, kwargs: dict[str, Any]) -> Any:
        """Run suffixes on the cached prefix: in place (then cropped back) for one, a copy for many."""
        batch = input_ids.shape[0]
        cache = self._cache
        if batch > 1:
            cache = copy.deepcopy(self._cache)
            cache.batch_repeat_interleave(batch)
        try:
            out = self.model(
                input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=keep, **kwargs
            )
        except BaseException:
            if batch == 1:  # a failed step may have extended some layers: rebuild the prefix
                self._prefill()
            raise
        if batch == 1:
            self._cache.crop(-input_ids.shape[1])
        return out

    def _set_threads(self) -> None:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _mrope_positions(self, enc: Encoded) -> torch.Tensor:
        types = enc.mm_token_type_ids
        assert types is not None
        pos, _ = self.model.model.get_rope_index(
            enc.ids.view(1, -1), mm_token_type_ids=types.view(1, -1), image_grid_thw=enc.image_grid_thw
        )
        return pos[:, 0, :]

    def _vision_kwargs(self, batch: Sequence[Encoded], start: int, width: int) -> dict[str, Any]:
        """Explicit M-RoPE positions (pads continue the count) and images, for Qwen2-VL models."""
        if not self.loaded.is_vl:
            return {}
        positions = torch.zeros(3, len(batch), width, dtype=torch.long)
        types = torch.zeros(len(batch), width, dtype=torch.long)
        for i, e in enumerate(batch):
            assert e.positions is not None and e.mm_token_type_ids is not None
            pos = e.positions[:, start:]
            n = pos.shape[1]
            positions[:, i, :n] = pos
            positions[:, i, n:] = pos[:, -1:] + torch.arange(1, width - n + 1)
            types[i, :n] = e.mm_token_type_ids[start:]
        kwargs: dict[str, Any] = {"position_ids": positions, "mm_token_type_ids": types}
        pixels = [e.pixel_values for e in batch if e.pixel_values is not None]
        if pixels:
            kwargs["pixel_values"] = torch.cat(pixels).to(self.model.dtype)
            kwargs["image_grid_thw"] = torch.cat(
                [e.image_grid_thw for e in batch if e.image_grid_thw is not None]
            )
        return kwargs
