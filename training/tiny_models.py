"""Tiny Qwen2 and Qwen2-VL checkpoints built locally: a tokenizer trained here, random weights.

Nothing is downloaded. The tokenizer is a byte-level BPE trained with ``tokenizers`` on this
project's own prompts, with Qwen's pre-tokenizer pipeline (NFC, Qwen's split regex, ByteLevel
without its own regex), so that ``AutoTokenizer`` reloading the folder as ``Qwen2Tokenizer``
gives the same ids. The chat templates are Qwen2.5's (TRL's training variants, which render
the same text and mark assistant turns for assistant-only loss). Every saved folder loads with
``from_pretrained(path)``; a Qwen2-VL folder also holds a ``Qwen2VLImageProcessorPil`` config
(see ``planner.engines.vision`` for the processor built from it: no torchvision needed).

Sizes: ``tiny`` (hidden 64, 2 layers: tests and the demo) and ``0.5b`` (the Qwen2.5-0.5B shape:
hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864; random weights: benchmarks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from planner.actions import ACTIONS, OPTION_LETTERS
from planner.atomic import apply_open_modes
from planner.memory import NHFMemory
from planner.prompts import CAPTION_INSTRUCTION, APPrompts, system_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

log = structlog.get_logger(__name__)

Size = Literal["tiny", "0.5b"]
SIZES: tuple[str, ...] = ("tiny", "0.5b")
TEXT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VISION_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
VOCAB_SIZE = 2048  # before special tokens; the corpus is small, so merges stop early anyway
MIN_PIXELS, MAX_PIXELS = 56 * 56, 224 * 224

_TEXT_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
}
# Tiny random models use wide initial weights so greedy decoding writes varied text (with the
# usual 0.02 it repeats one token); the 0.5B shape keeps Qwen's 0.02 (benchmarks only).
_INIT_RANGE = {"tiny": 0.3, "0.5b": 0.02}
# Multimodal RoPE sections (temporal, height, width) sum to head_dim / 2.
_MROPE_SECTIONS = {"tiny": [2, 3, 3], "0.5b": [8, 12, 12]}


def corpus() -> Iterator[str]:
    """The tokenizer's training text: the real prompts, answers and every option letter."""
    yield system_prompt()
    yield CAPTION_INSTRUCTION
    histories = [ACTIONS[i:] + ACTIONS[:i] for i in range(len(ACTIONS))]
    for hist in histories:
        memory = NHFMemory.from_history(hist[:-1], hist[-1], caption="The grasper retracts the gallbladder.")
        for variant in ("indirect", "direct"):
            for message in APPrompts.plan(memory, variant).messages[1:]:
                yield json.dumps(message["content"]) if variant == "direct" else str(message["content"])
        for order in histories:
            yield str(APPrompts.options(memory, "indirect", order).messages[1]["content"])
        answer = {
            "progress_assessment": "The dissection of Calot's triangle is under way.",
            "safety_considerations": "Keep the clip away from the common bile duct.",
            "next_actions": [{"action": a, "rationale": f"{a} usually follows."} for a in hist[:3]],
        }
        yield json.dumps(answer)
    for letter in OPTION_LETTERS:  # letters alone, after a space and after a newline
        yield f"{letter} {letter}\n{letter}. ({letter}) Answer: {letter}"
    yield " ".join(ACTIONS) + "\n" + "\n".join(ACTIONS)


def build_tokenizer(vl: bool = False, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with Qwen's pre-tokenizer pipeline and wrap it for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from trl.chat_template_utils import qwen2_5_training_chat_template, qwen2_5_vl_training_chat_template

    specials = [*TEXT_SPECIALS, *(VISION_SPECIALS if vl else ())]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    template = qwen2_5_vl_training_chat_template if vl else qwen2_5_training_chat_template
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=specials[1:],
        chat_template=template,
        model_max_length=32768,
        padding_side="right",
    )
    check_tokenizer(wrapped)
    return wrapped


def check_tokenizer(tokenizer: Any) -> None:
    """Each option letter (alone and after a space) and each special token is one token."""
    for text in [*OPTION_LETTERS, *(f" {letter}" for letter in OPTION_LETTERS), *TEXT_SPECIALS]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"tokenizer splits {text!r} into {len(ids)} tokens: {ids}")


def text_config(tokenizer: Any, size: Size = "tiny") -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=_INIT_RANGE[_checked(size)],
        **_TEXT_SHAPES[size],
    )


def vl_config(tokenizer: Any, size: Size = "tiny") -> Any:
    from transformers import Qwen2VLConfig

    shape = _TEXT_SHAPES[_checked(size)]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIALS}
    vision = (
        {"depth": 2, "embed_dim": 32, "hidden_size": shape["hidden_size"], "num_heads": 4, "mlp_ratio": 2}
        if size == "tiny"
        else {"depth": 8, "embed_dim": 640, "hidden_size": shape["hidden_size"], "num_heads": 10}
    )
    text = {
        **shape,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": _MROPE_SECTIONS[size],
        },
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": True,
        "initializer_range": _INIT_RANGE[size],
    }
    return Qwen2VLConfig(
        text_config=text,
        vision_config={
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": _INIT_RANGE[size],
            **vision,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_model(tokenizer: Any, vl: bool = False, size: Size = "tiny", seed: int = 0) -> PreTrainedModel:
    """Random weights in the given shape (seeded, so two builds are identical)."""
    import torch
    from transformers import Qwen2ForCausalLM, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    if vl:
        return Qwen2VLForConditionalGeneration(vl_config(tokenizer, size)).eval()
    return Qwen2ForCausalLM(text_config(tokenizer, size)).eval()


def build_tiny_model(out_dir: Path | str, vl: bool = False, size: Size = "tiny", seed: int = 0) -> Path:
    """Build and save a checkpoint folder (config, weights, tokenizer, image processor for VL)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vl)
    model = build_model(tokenizer, vl, size, seed)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in TEXT_SPECIALS[::2]]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if vl:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(out)
    apply_open_modes(out)  # safetensors writes 0o600
    params = sum(p.numel() for p in model.parameters())
    log.info("tiny_model.built", path=str(out), vl=vl, size=size, vocab=len(tokenizer), params=params)
    return out


def _checked(size: str) -> str:
    if size not in _TEXT_SHAPES:
        raise ValueError(f"model size must be one of {', '.join(SIZES)}, got {size!r}")
    return size
