"""``transformers:PATH``: a local model (Qwen2 / Qwen2.5, or Qwen2-VL for DirNHFM) as the teacher.

Greedy decoding at temperature 0 (on the cached system prefix, as the planner engine does);
sampling with ``generate(do_sample=True)`` otherwise, seeded by the answer's index so a rerun of
the same request writes the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.engines.base import EngineSettings
from planner.exceptions import EngineError
from training.teachers import TeacherContext, TeacherError, TeacherRequest

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")

#: Capability: the answer depends on the sample's ground truth (see ``training.teachers``).
SEES_GROUND_TRUTH = False


class TransformersTeacher:
    def __init__(self, path: str, ctx: TeacherContext) -> None:
        from planner.engines.hf_loading import load_model
        from planner.engines.prefix_cache import PrefixCachedLM
        from planner.prompts import system_message

        try:
            loaded = load_model(path, EngineSettings())
        except EngineError as exc:
            raise TeacherError(str(exc)) from None
        self.lm = PrefixCachedLM(loaded, [system_message()], threads=None)
        tok = loaded.tokenizer
        self.stop_ids = [int(i) for i in (tok.convert_tokens_to_ids(t) for t in STOP_TOKENS) if i is not None]
        self.spec = f"transformers:{path}"
        self.model = describe(path, ctx)
        self.calls = 0

    def respond(self, request: TeacherRequest) -> str:
        self.calls += 1
        try:
            enc = self.lm.encode(request.messages)
        except (ValueError, EngineError) as exc:
            raise TeacherError(f"{self.model}: {exc}") from None
        if request.temperature == 0:
            ids = list(self.lm.greedy(enc, request.max_tokens, self.stop_ids))
        else:
            ids = self._sample(enc, request)
        return self.lm.decode(ids)

    def _sample(self, enc: Any, request: TeacherRequest) -> list[int]:
        import torch

        torch.manual_seed(request.index)
        kwargs: dict[str, Any] = {}
        if enc.pixel_values is not None:
            kwargs = {"pixel_values": enc.pixel_values, "image_grid_thw": enc.image_grid_thw}
        with self.lm.lock, torch.inference_mode():
            out = self.lm.model.generate(
                input_ids=enc.ids.view(1, -1),
                attention_mask=torch.ones(1, enc.ids.numel(), dtype=torch.long),
                do_sample=True,
                temperature=request.temperature,
                max_new_tokens=request.max_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.lm.pad_id,
                **kwargs,
            )
        new = out[0, enc.ids.numel() :].tolist()
        return [t for t in new if t not in self.stop_ids]

    def close(self) -> None:
        return None


def describe(arg: str, ctx: TeacherContext) -> str:
    return str(Path(arg).resolve()) if arg else ""


def create(arg: str, ctx: TeacherContext) -> TransformersTeacher:
    if not arg:
        raise TeacherError("the transformers teacher needs a checkpoint folder: transformers:PATH")
    return TransformersTeacher(arg, ctx)
