"""Typed recipes of the training stages: distillation, LoRA SFT and GRPO (pure pydantic, no torch).

They are the ``training.distill``, ``training.sft`` and ``training.grpo`` sections of the one
configuration tree (``training.config.AppConfig``); files under ``configs/`` override these
defaults. An unknown key or a bad value fails validation naming the key (exit 2).

Batch sizes are global, as papers state them: ``global_batch_size`` = per-device batch x
gradient accumulation x number of processes; the accumulation is derived at run time from the
number of processes (1 here, 8 under ``accelerate launch`` on 8 GPUs), so one recipe gives the
same optimisation on any machine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from planner.config import Section

Precision = Literal["auto", "bf16", "fp16", "fp32"]
#: Every linear layer of a Qwen2 / Qwen2.5 decoder block (LLaMA-Factory's ``lora_target: all``).
QWEN_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


class DistillConfig(Section):
    teacher: str = "reference"  # reference | openai:URL | transformers:PATH
    model: str | None = None  # served model name (openai); None: the first of GET /models
    accept: Literal["top1", "top3"] = "top1"  # the target must be the answer's top-1 / in its top three
    samples_per_prompt: int = Field(1, ge=1, le=32)  # k answers per prompt, majority vote on the top-1
    temperature: float | None = Field(None, ge=0.0, le=2.0)  # None: 0 for k = 1, 0.7 for k > 1
    max_tokens: int = Field(512, ge=16, le=8192)
    variant: Literal["indirect", "direct"] = "indirect"  # IndirNHFM (text) or DirNHFM (frames)
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(2, ge=0)

    @property
    def sampling_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.samples_per_prompt == 1 else 0.7


class LoraSettings(Section):
    r: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = QWEN_LORA_TARGETS

    @model_validator(mode="after")
    def _targets(self) -> LoraSettings:
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        return self


class _TrainerRecipe(Section):
    """What SFT and GRPO share: the base model, the run folder, the optimiser and the hardware."""

    model: str = ""  # local base checkpoint folder (nothing is downloaded)
    output_dir: str = ""
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # > 0 overrides epochs
    global_batch_size: int = Field(8, ge=1)
    per_device_batch_size: int = Field(1, ge=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Precision = "auto"  # auto: bf16 on a GPU that has it, fp32 on CPU
    activation_checkpointing: bool | None = None  # None: on with a GPU, off on CPU
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1)  # checkpoints (for --resume) every this many steps
    save_total_limit: int = Field(2, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)

    def accumulation(self, world_size: int) -> int:
        """Gradient accumulation steps that make ``global_batch_size`` on ``world_size`` processes."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of per_device_batch_size "
                f"{self.per_device_batch_size} x {world_size} processes"
            )
        return self.global_batch_size // per_step


class SftConfig(_TrainerRecipe):
    """LoRA SFT on distilled chats; defaults = the paper's recipe (LLaMA-Factory, 50 epochs)."""

    data: str = ""  # chat JSONL from `llm-sap distill`
    epochs: float = Field(50.0, gt=0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    lora: LoraSettings = LoraSettings()
    max_length: int = Field(2048, ge=64)
    assistant_only_loss: bool = True
    # Our addition (0 = the paper's data exactly): also train the option-letter question the
    # planner's ranking step asks, once per letter order, answered with the teacher's top-1.
    option_examples: int = Field(0, ge=0, le=120)


class GrpoConfig(_TrainerRecipe):
    """GRPO from the SFT adapter with the rule-based rewards of ``training.rewards``."""

    sft_adapter: str = (
        ""  # the LoRA folder written by `llm-sap sft` (the policy's start and the KL reference)
    )
    data: str = ""  # prompts (+ meta) from a distilled chat JSONL ...
    annotations: str = ""  # ... or every training-video sample of the annotation file (takes precedence)
    variant: Literal["indirect", "direct"] = "indirect"  # for prompts built from annotations
    learning_rate: float = Field(1e-6, gt=0, le=1.0)
    beta: float = Field(1e-2, ge=0.0)  # KL coefficient to the SFT model
    num_generations: int = Field(8, ge=2)
    global_batch_size: int = Field(8, ge=1)  # completions per optimiser step (a multiple of num_generations)
    per_device_batch_size: int = Field(8, ge=1)
    max_completion_length: int = Field(384, ge=8)
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    format_weight: float = Field(1.0, ge=0.0)
    correctness_weight: float = Field(1.0, ge=0.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "constant"

    @model_validator(mode="after")
    def _groups(self) -> GrpoConfig:
        if self.global_batch_size % self.num_generations:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of num_generations "
                f"{self.num_generations} (whole groups per step)"
            )
        return self
