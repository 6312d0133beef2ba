"""What the SFT and GRPO runs share: hardware settings, model loading, logging, resuming, summaries.

CPU (no GPU visible): fp32, no activation checkpointing (TRL defaults to bf16 and checkpointing;
both are switched off, see ../shared/notes/qwen-on-cpu.md). GPU: bf16 when the GPU has it, and
activation checkpointing on. Under ``accelerate launch`` / ``torchrun`` each process reads
``WORLD_SIZE``; gradient accumulation is derived so the global batch stays the recipe's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from planner.atomic import apply_open_modes, atomic_write_json
from training.exceptions import TrainingError, UsageError
from training.recipes import _TrainerRecipe

log = structlog.get_logger(__name__)

VL_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})


class RecipeError(TrainingError):
    """A training recipe cannot run as configured (missing model, data or adapter)."""


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def hardware_args(recipe: _TrainerRecipe) -> dict[str, Any]:
    """TrainingArguments for the machine: use_cpu, bf16/fp16, activation checkpointing, accumulation."""
    import torch

    cuda = torch.cuda.is_available()
    precision = recipe.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    checkpointing = cuda if recipe.activation_checkpointing is None else recipe.activation_checkpointing
    try:
        accumulation = recipe.accumulation(world_size())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    return {
        "use_cpu": not cuda,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "activation_checkpointing": checkpointing,
        "gradient_accumulation_steps": accumulation,
        "per_device_train_batch_size": recipe.per_device_batch_size,
    }


def common_args(recipe: _TrainerRecipe) -> dict[str, Any]:
    """The TrainingArguments both trainers take from a recipe."""
    return {
        "output_dir": recipe.output_dir,
        "learning_rate": recipe.learning_rate,
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps,
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "weight_decay": recipe.weight_decay,
        "max_grad_norm": recipe.max_grad_norm,
        "logging_steps": recipe.logging_steps,
        "save_strategy": "steps",
        "save_steps": recipe.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "seed": recipe.seed,
        "report_to": "none",
        # no tqdm bar and no printed dict per log step: RunLog's one line per step is the progress
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **hardware_args(recipe),
    }


def require(value: str, key: str, what: str) -> Path:
    if not value:
        raise RecipeError(f"config key {key} is empty: set it to {what} (--set {key}=...)")
    return Path(value)


def check_model_folder(path: Path, key: str) -> None:
    if not (path / "config.json").is_file():
        raise RecipeError(f"{key} = {str(path)!r}: no model checkpoint there (config.json not found)")


def resume_point(output_dir: Path, resume: bool) -> str | None:
    """The checkpoint to resume from; refuses to start over a folder that holds checkpoints."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if resume and last is None:
        raise UsageError(f"--resume: no checkpoint-* folder in {output_dir} to resume from")
    if not resume and last is not None:
        name = Path(last).name
        raise UsageError(f"{output_dir} holds checkpoints ({name}); pass --resume or another output_dir")
    return last


def load_model_and_tokenizer(path: Path, bf16: bool) -> tuple[Any, Any, str]:
    """A causal LM (or Qwen2-VL) and its tokenizer, for training; nothing is downloaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    model_type = str(AutoConfig.from_pretrained(path).model_type)
    auto = AutoModelForImageTextToText if model_type in VL_MODEL_TYPES else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    use_training_template(tokenizer, model_type)
    return model, tokenizer, model_type


def use_training_template(tokenizer: Any, model_type: str) -> None:
    """Qwen2.5's chat template with ``{% generation %}`` markers (TRL's), for assistant-only loss.

    It renders the same text as Qwen2.5's own template; a template that already has the markers
    is kept. Other model families are left to TRL's own template swap.
    """
    from trl.chat_template_utils import (
        has_generation_markers,
        qwen2_5_training_chat_template,
        qwen2_5_vl_training_chat_template,
    )

    if tokenizer.chat_template and has_generation_markers(tokenizer.chat_template):
        return
    if model_type in VL_MODEL_TYPES:
        tokenizer.chat_template = qwen2_5_vl_training_chat_template
    elif model_type == "qwen2":
        tokenizer.chat_template = qwen2_5_training_chat_template
    log.info("train.chat_template", model_type=model_type, template="trl qwen2.5 training template")


@dataclass
class RunLog:
    """Every log record of the trainer (loss, reward, lr, ...), also sent to structlog: one line per
    logging step ("sft.log step=8 of=16 ..."), the only one (see :meth:`attach`)."""

    stage: str
    started: float = field(default_factory=time.perf_counter)
    records: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, trainer: Any) -> None:
        """Log through this run only: transformers' own printer would print each record again."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(self.callback())

    def callback(self) -> Any:
        from transformers import TrainerCallback

        run = self

        class _Log(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                if not logs or not state.is_world_process_zero:
                    return
                row = {"step": state.global_step, **{k: _num(v) for k, v in logs.items()}}
                run.records.append(row)
                log.info(f"{run.stage}.log", **row, of=state.max_steps, elapsed_s=run.seconds())

        return _Log()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.records if isinstance(r.get(key), int | float)]


def _num(value: Any) -> Any:
    """Six significant digits (not decimals: a KL of 3e-07 is not 0)."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def write_summary(trainer: Any, output_dir: Path, summary: dict[str, Any]) -> None:
    """The run's summary beside its adapter; the folder's files get the modes ``open()`` gives (safetensors
    writes 0o600), so a server or trainer running as another user can read them."""
    if trainer.is_world_process_zero():
        atomic_write_json(output_dir / "training_summary.json", summary)
        apply_open_modes(output_dir)
