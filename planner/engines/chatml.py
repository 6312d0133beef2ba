"""Render chat messages into a prompt string locally (for engines that send raw prompts).

With the served model's tokenizer folder, its own chat template renders the prompt. Without one,
:func:`render_chatml` writes Qwen2.5's ChatML by hand; for text messages that start with a system
message (every prompt of this project does), it is byte-identical to Qwen2.5's template.
Rendering locally means the static system prefix is the same text on every request, so the
server's prefix cache (vLLM APC, SGLang radix cache, TensorRT-LLM block reuse) hits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from planner.exceptions import EngineError

Renderer = Callable[[Sequence[dict[str, Any]]], str]


def render_chatml(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Qwen2.5 ChatML for text-only messages with an explicit system message first."""
    if not messages or messages[0]["role"] != "system":
        raise EngineError("ChatML rendering needs an explicit system message first (Qwen injects its own)")
    parts = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            raise EngineError(
                f"ChatML rendering takes text messages only; the {message['role']} message has parts "
                "(images need the model's own processor)"
            )
        parts.append(f"<|im_start|>{message['role']}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def make_renderer(tokenizer_path: str | None) -> Renderer:
    """The tokenizer's chat template when a folder is given, else :func:`render_chatml`."""
    if tokenizer_path is None:
        return render_chatml
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise EngineError(
            "rendering with a tokenizer needs transformers (pip install llm-sap[models])"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot load the tokenizer at {tokenizer_path!r}: {exc}") from exc
    if not tokenizer.chat_template:
        raise EngineError(f"the tokenizer at {tokenizer_path!r} has no chat template")

    def render(messages: Sequence[dict[str, Any]]) -> str:
        text: str = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return text

    return render
