"""configs/grpo-paper.toml is the GRPO seed recipe, exactly."""

from __future__ import annotations

from pathlib import Path

from training.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_grpo_paper_config_is_the_seed_recipe() -> None:
    grpo = load_config([CONFIGS / "grpo-paper.toml"]).training.grpo
    assert grpo.epochs == 1 and grpo.max_steps == -1
    assert grpo.learning_rate == 1e-6 and grpo.beta == 1e-2
    assert grpo.global_batch_size == 16 and grpo.num_generations == 8
    assert grpo.lr_scheduler == "cosine" and grpo.warmup_ratio == 0.1
    assert grpo.accumulation(8) == 1 and grpo.accumulation(1) == 8
