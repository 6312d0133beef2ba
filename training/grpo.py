"""GRPO from the SFT adapter with TRL's GRPOTrainer and the rule-based rewards of ``training.rewards``.

Where the policy starts and what the KL term pulls towards (beta > 0):

- The policy is the base model with the SFT LoRA adapter loaded *trainable* (``is_trainable=True``)
  and trained further: GRPO starts exactly at the SFT model.
- The reference must be the SFT model, not the base. TRL (1.16) does this for a PeftModel that
  arrives with a pretrained adapter and ``beta > 0``: it adds a frozen copy of the adapter named
  ``ref`` and computes the reference log-probs with ``ref`` active. (Passing a fresh ``peft_config``
  instead would make the reference the base with adapters disabled: the KL would pull towards the
  untuned model.) ``check_reference`` verifies the copy exists and is identical before training.
- The result is one adapter on the original base: ``transformers:BASE --adapter OUTPUT_DIR`` loads
  it like the SFT adapter, and ``llm-sap merge`` merges it. The frozen ``ref`` copy is not kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from training.cholect50 import load_annotations
from training.distill import read_chats
from training.recipes import GrpoConfig
from training.rewards import trl_correctness_reward, trl_format_reward
from training.samples import training_samples
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

REWARD_KEYS = ("reward", "rewards/trl_format_reward/mean", "rewards/trl_correctness_reward/mean")


@dataclass(frozen=True)
class GrpoResult:
    output_dir: Path
    steps: int
    rewards: list[float]
    format_rewards: list[float]
    correctness_rewards: list[float]
    kl: list[float]
    seconds: float
    model: Any = None  # the trained PeftModel (for tests); not saved twice


def prompt_rows(recipe: GrpoConfig) -> list[dict[str, Any]]:
    """Prompts with their ground truth: every training sample of the annotations, or the distilled chats."""
    rows: list[dict[str, Any]]
    if recipe.annotations:
        samples = training_samples(load_annotations(recipe.annotations), recipe.variant).samples
        rows = [
            {"prompt": list(s.messages), "target": s.source.target, "next_action": s.source.next_action or ""}
            for s in samples
        ]
    else:
        data = require(recipe.data, "training.grpo.data", "a distilled chat JSONL (or set annotations)")
        rows = []
        for n, record in enumerate(read_chats(data), 1):
            meta = record.get("meta") or {}
            if not isinstance(meta.get("target"), str):
                raise RecipeError(f"{data}: chat {n} has no meta.target (GRPO needs the ground truth)")
            prompt = [m for m in record["messages"] if m["role"] != "assistant"]
            truth = {"target": meta["target"], "next_action": meta.get("next_action") or ""}
            rows.append({"prompt": prompt, **truth})
    if any(isinstance(m["content"], list) for r in rows for m in r["prompt"]):
        raise RecipeError("GRPO on DirNHFM prompts (frames) is not supported; use IndirNHFM prompts")
    return rows


def load_policy(recipe: GrpoConfig, bf16: bool) -> tuple[Any, Any]:
    """The base model with the SFT adapter, trainable: GRPO starts at the SFT model."""
    from peft import PeftModel

    model_path = require(recipe.model, "training.grpo.model", "the base checkpoint folder the SFT ran on")
    adapter = require(recipe.sft_adapter, "training.grpo.sft_adapter", "the adapter folder of `llm-sap sft`")
    check_model_folder(model_path, "training.grpo.model")
    if not (adapter / "adapter_config.json").is_file():
        raise RecipeError(f"training.grpo.sft_adapter = {str(adapter)!r}: no adapter_config.json there")
    base, tokenizer, _ = load_model_and_tokenizer(model_path, bf16)
    policy = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    trained_on = policy.peft_config["default"].base_model_name_or_path
    if trained_on and Path(trained_on).resolve() != model_path.resolve():
        log.warning("grpo.base_differs", sft_base=trained_on, model=str(model_path))
    return policy, tokenizer


def check_reference(trainer: Any, beta: float) -> None:
    """With beta > 0 the KL reference must be a frozen copy of the SFT adapter (TRL's ``ref``)."""
    if beta == 0:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" not in model.peft_config:
        raise RecipeError("TRL did not create the frozen 'ref' adapter: the KL would pull towards the base")
    params = dict(model.named_parameters())
    pairs = [(n, n.replace(".default.", ".ref.")) for n in params if ".default." in n]
    if not pairs or any(not params[n].data.equal(params[r].data) for n, r in pairs):
        raise RecipeError("the 'ref' adapter is not a copy of the SFT adapter")


def run_grpo(recipe: GrpoConfig, resume: bool = False) -> GrpoResult:
    """Train from the SFT adapter; save the GRPO adapter in ``output_dir`` with a summary."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    output_dir = require(recipe.output_dir, "training.grpo.output_dir", "the adapter folder to write")
    last = resume_point(output_dir, resume)
    rows = prompt_rows(recipe)
    args = GRPOConfig(
        **common_args(recipe),
        beta=recipe.beta,
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature,
        reward_weights=[recipe.format_weight, recipe.correctness_weight],
        use_vllm=False,
        log_completions=False,
    )
    policy, tokenizer = load_policy(recipe, bool(args.bf16))
    run = RunLog("grpo")
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[trl_format_reward, trl_correctness_reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    run.attach(trainer)
    check_reference(trainer, recipe.beta)
    log.info("grpo.start", prompts=len(rows), beta=recipe.beta, k=recipe.num_generations, resume_from=last)
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))
    shutil.rmtree(output_dir / "ref", ignore_errors=True)  # the frozen reference copy (= the SFT adapter)
    result = GrpoResult(
        output_dir=output_dir,
        steps=trainer.state.global_step,
        rewards=run.values(REWARD_KEYS[0]),
        format_rewards=run.values(REWARD_KEYS[1]),
        correctness_rewards=run.values(REWARD_KEYS[2]),
        kl=run.values("kl"),
        seconds=run.seconds(),
        model=trainer.accelerator.unwrap_model(trainer.model),
    )
    write_summary(
        trainer,
        output_dir,
        {
            "stage": "grpo",
            "base_model": str(Path(recipe.model).resolve()),
            "sft_adapter": str(Path(recipe.sft_adapter).resolve()),
            "prompts": len(rows),
            "steps": result.steps,
            "rewards": result.rewards,
            "format_rewards": result.format_rewards,
            "correctness_rewards": result.correctness_rewards,
            "kl": result.kl,
            "seconds": result.seconds,
            "recipe": recipe.model_dump(mode="json"),
            "log": run.records,
        },
    )
    log.info("grpo.done", steps=result.steps, seconds=result.seconds, rewards=result.rewards)
    return result
