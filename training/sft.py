"""LoRA SFT on distilled chats with TRL's SFTTrainer; the adapter folder loads straight into the planner.

- Loss on the assistant's answer only (``assistant_only_loss``, with TRL's Qwen2.5 training chat
  template, which renders the same text as Qwen2.5's own and marks the assistant turn).
- LoRA from the recipe (r, alpha, dropout, target modules); base weights stay frozen.
- ``option_examples`` > 0 also trains the option-letter question the planner's ranking step asks
  (one example per letter order, answered with the teacher's top-1): the planner ranks by the
  next-token log-probs of the letters, so this is what moves its ranking.
- Resumable: checkpoints every ``save_steps`` in ``output_dir``; ``resume=True`` continues from the
  last one. Multi-GPU: the same code under ``accelerate launch`` or ``torchrun``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from planner.engines.options import option_orders
from planner.memory import NHFMemory
from planner.prompts import APPrompts
from planner.response import StructuredResponse, parse_response
from training.distill import read_chats
from training.recipes import SftConfig
from training.trainer_common import (
    RecipeError,
    RunLog,
    check_model_folder,
    common_args,
    load_model_and_tokenizer,
    require,
    resume_point,
    write_summary,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SftResult:
    output_dir: Path
    steps: int
    losses: list[float]
    seconds: float
    examples: int
    model: Any = None  # the trained PeftModel (tests compare it with the saved adapter)


def option_rows(record: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Option-letter chats for one distilled record: one per letter order, answered with its top-1."""
    meta = record.get("meta") or {}
    answer = parse_response(str(record["messages"][-1]["content"]))
    if count <= 0 or not isinstance(answer, StructuredResponse) or "distant" not in meta:
        return []
    variant = meta.get("variant", "indirect")
    frames = [p["image"] for p in _parts(record["messages"][1]) if p.get("type") == "image"]
    memory = NHFMemory.from_history(meta["distant"], meta.get("nearest"), caption=meta.get("caption"))
    if frames:
        memory = memory.with_keyframes(frames)
    top1 = answer.ranked_labels[0]
    rows = []
    for order in option_orders(count):
        prompt = APPrompts.options(memory, variant, order)
        letter = next(letter for letter, action in prompt.options if action == top1)
        rows.append({"messages": [*prompt.messages, {"role": "assistant", "content": letter}]})
    return rows


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def build_rows(records: list[dict[str, Any]], option_examples: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for record in records:
        if record["messages"][-1].get("role") != "assistant":
            raise RecipeError("every chat must end with the assistant's answer (`llm-sap distill` output)")
        rows.append({"messages": record["messages"]})
        rows.extend(option_rows(record, option_examples))
    return [_vision_row(r) for r in rows]


def _vision_row(row: dict[str, Any]) -> dict[str, Any]:
    """TRL's vision format: ``images`` (PIL) + ``{"type": "image"}`` placeholders, for DirNHFM chats."""
    if not any(p.get("type") == "image" for m in row["messages"] for p in _parts(m)):
        return row
    from planner.engines.vision import to_pil

    images, messages = [], []
    for m in row["messages"]:  # every content a list of parts: Arrow cannot mix strings and lists
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        content = []
        for p in parts:
            if p.get("type") == "image":
                images.append(to_pil(p["image"]))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": p.get("text", "")})
        messages.append({"role": m["role"], "content": content})
    return {"messages": messages, "images": images}


def _savable(processor: Any, tokenizer: Any) -> Any:
    """Our torchvision-free Qwen2-VL processor cannot ``save_pretrained`` itself (no video processor):
    checkpoints keep the tokenizer and the image processor config, as ``planner.engines.vision`` reloads."""

    def save_pretrained(folder: str, **kwargs: Any) -> None:
        tokenizer.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)

    processor.save_pretrained = save_pretrained
    return processor


def run_sft(recipe: SftConfig, resume: bool = False) -> SftResult:
    """Train, save the adapter (+ tokenizer) in ``output_dir``, write ``training_summary.json``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model_path = require(recipe.model, "training.sft.model", "a local base checkpoint folder")
    data_path = require(recipe.data, "training.sft.data", "the chat JSONL of `llm-sap distill`")
    output_dir = require(recipe.output_dir, "training.sft.output_dir", "the adapter folder to write")
    check_model_folder(model_path, "training.sft.model")
    last = resume_point(output_dir, resume)
    rows = build_rows(read_chats(data_path), recipe.option_examples)
    args = SFTConfig(
        **common_args(recipe),
        assistant_only_loss=recipe.assistant_only_loss,
        max_length=recipe.max_length,
        packing=False,
        dataset_num_proc=None,
    )
    model, tokenizer, model_type = load_model_and_tokenizer(model_path, bool(args.bf16))
    run = RunLog("sft")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=_processing_class(rows, model_path, model_type, tokenizer),
        peft_config=_lora_config(recipe),
    )
    run.attach(trainer)
    kept = _kept_examples(len(trainer.train_dataset), len(rows), recipe.max_length)
    log.info("sft.start", model=str(model_path), examples=kept, output_dir=str(output_dir), resume_from=last)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))
    losses = run.values("loss")
    model = trainer.accelerator.unwrap_model(trainer.model)
    result = SftResult(output_dir, trainer.state.global_step, losses, run.seconds(), kept, model)
    summary = {
        "stage": "sft",
        "base_model": str(model_path.resolve()),
        "data": str(data_path),
        "examples": len(rows),
        "steps": result.steps,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": result.seconds,
        "recipe": recipe.model_dump(mode="json"),
        "log": run.records,
    }
    write_summary(trainer, output_dir, summary)
    log.info("sft.done", steps=result.steps, seconds=result.seconds, last_loss=losses[-1] if losses else None)
    return result


def _processing_class(rows: list[dict[str, Any]], model_path: Path, model_type: str, tokenizer: Any) -> Any:
    """The tokenizer, or for DirNHFM data (rows with frames) a Qwen2-VL processor around it."""
    if "images" not in rows[0]:
        return tokenizer
    from planner.engines.vision import load_processor

    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise RecipeError(f"the data has DirNHFM frames but {model_path} is a {model_type} (text) model")
    return _savable(load_processor(model_path, tokenizer), tokenizer)


def _lora_config(recipe: SftConfig) -> Any:
    from peft import LoraConfig

    lora = recipe.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def _kept_examples(kept: int, total: int, max_length: int) -> int:
    """TRL drops examples whose answer was cut off by max_length: warn, and refuse when none is left."""
    if kept < total:
        log.warning("sft.examples_dropped", dropped=total - kept, kept=kept, max_length=max_length)
    if kept == 0:
        raise RecipeError(
            f"all {total} examples lost their answer to truncation at training.sft.max_length = "
            f"{max_length}; raise it (the system prompt alone is ~900 tokens)"
        )
    return kept
