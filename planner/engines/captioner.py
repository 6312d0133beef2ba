"""IndirNHFM's captioner: a Qwen2-VL model writes C_t for the current clip's keyframes.

Captions come from the DCPrompts (one per keyframe used, joined), are generated greedily with a
small token cap, and are cached per clip (key: the clip's start time and action), so a refreshed
recommendation for the same clip costs nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import structlog

from planner.engines.prefix_cache import PrefixCachedLM
from planner.exceptions import EngineError
from planner.memory import NearClip, NHFMemory
from planner.prompts import DCPrompts, system_message

log = structlog.get_logger(__name__)

ClipKey = tuple[float, str]


class Captioner:
    """Captions clips with a Qwen2-VL model; thread-safe, with a bounded per-clip cache."""

    def __init__(
        self, lm: PrefixCachedLM, max_tokens: int = 48, frames: int = 1, cache_size: int = 64
    ) -> None:
        if not lm.loaded.is_vl:
            raise EngineError(
                f"the captioner needs a Qwen2-VL checkpoint, got {lm.loaded.model_type} ({lm.loaded.path})"
            )
        if lm.prefix_messages != [system_message()]:
            raise EngineError("the captioner's cached prefix must be the planner's system message")
        self.lm = lm
        self.max_tokens = max_tokens
        self.frames = frames
        self.cache_size = cache_size
        self.model = lm.loaded.description
        self._cache: OrderedDict[ClipKey, str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        tok = lm.tokenizer
        self._stop = [
            i
            for i in (tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
            if i is not None
        ]

    def caption(self, clip: NearClip) -> str | None:
        """C_t for ``clip`` (``None`` when it has no keyframes yet)."""
        if not clip.keyframes:
            return None
        key = (clip.start_s, clip.action)
        with self._lock:
            if key in self._cache:
                self.hits += 1
                self._cache.move_to_end(key)
                return self._cache[key]
        text = " ".join(self._describe(frame) for frame in clip.keyframes[-self.frames :]).strip()
        with self._lock:
            self.misses += 1
            self._cache[key] = text
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        log.info("captioner.captioned", clip_start_s=clip.start_s, action=clip.action, chars=len(text))
        return text

    def describe(self, frames: Sequence[object]) -> str:
        """A caption of these keyframes, uncached (the live caption worker caches per clip)."""
        return " ".join(self._describe(frame) for frame in frames).strip()

    def attach(self, memory: NHFMemory) -> NHFMemory:
        """The memory with the current clip's caption, written here unless it already has one."""
        near = memory.near
        if near is None or near.caption:
            return memory
        text = self.caption(near)
        return memory.with_caption(text) if text else memory

    def _describe(self, frame: object) -> str:
        enc = self.lm.encode(DCPrompts.caption(frame).messages)
        ids = list(self.lm.greedy(enc, self.max_tokens, self._stop))
        text: str = self.lm.decode(ids)
        return " ".join(text.split())
