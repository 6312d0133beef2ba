"""GRPO with TRL from an SFT warm-up: the adapter moves, the KL reference stays the SFT adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.qwen_fixtures import TinyQwen
from tests.training_fixtures import compact
from training.distill import write_chats
from training.grpo import GrpoResult, prompt_rows, run_grpo
from training.recipes import GrpoConfig
from training.sft import SftResult
from training.trainer_common import RecipeError

pytest_plugins = ["tests.qwen_fixtures", "tests.training_fixtures"]


def grpo_recipe(tiny: TinyQwen, adapter: Path, data: Path, out: Path, **changes: Any) -> GrpoConfig:
    values: dict[str, Any] = {
        "model": str(tiny.text),
        "sft_adapter": str(adapter),
        "data": str(data),
        "output_dir": str(out),
        "max_steps": 2,
        "num_generations": 4,
        "global_batch_size": 4,
        "per_device_batch_size": 4,
        "max_completion_length": 16,
        "learning_rate": 1e-3,
        "beta": 1e-2,
        "save_steps": 2,
        "precision": "fp32",
        "seed": 0,
    }
    return GrpoConfig(**(values | changes))


@pytest.fixture(scope="module")
def grpo(
    tiny_qwen: TinyQwen,
    warm_sft: SftResult,
    distilled_records: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> GrpoResult:
    root = tmp_path_factory.mktemp("grpo")
    write_chats(root / "prompts.jsonl", [compact(r) for r in distilled_records])
    return run_grpo(grpo_recipe(tiny_qwen, warm_sft.output_dir, root / "prompts.jsonl", root / "adapter"))


def _lora(named: Any, adapter: str) -> dict[str, Any]:
    return {n.replace(f".{adapter}.", "."): p.detach().clone() for n, p in named if f".{adapter}." in n}


def test_grpo_steps_move_the_sft_adapter_and_log_rewards(grpo: GrpoResult, warm_sft: SftResult) -> None:
    assert grpo.steps == 2 and len(grpo.rewards) == 2 and len(grpo.kl) == 2
    assert all(0.0 <= r <= 2.0 for r in grpo.rewards)  # two rewards, each in [0, 1]
    assert any(r > 0 for r in grpo.rewards)  # the warm-up makes the answers (partly) right
    assert all(0.0 <= f <= 1.0 for f in grpo.format_rewards)
    start = _lora(warm_sft.model.named_parameters(), "default")
    end = _lora(grpo.model.named_parameters(), "default")
    assert set(start) == set(end) and len(end) == 28
    assert all(not end[n].equal(start[n]) for n in end)  # every LoRA matrix moved


def test_the_kl_reference_is_the_frozen_sft_adapter(grpo: GrpoResult, warm_sft: SftResult) -> None:
    ref = _lora(grpo.model.named_parameters(), "ref")
    sft = _lora(warm_sft.model.named_parameters(), "default")
    assert set(ref) == set(sft) and all(ref[n].equal(sft[n]) for n in ref)  # unchanged by training
    assert not any(p.requires_grad for n, p in grpo.model.named_parameters() if ".ref." in n)


def test_the_grpo_adapter_is_one_plain_adapter_for_the_planner(grpo: GrpoResult, tiny_qwen: TinyQwen) -> None:
    from planner.engines import create_engine
    from planner.engines.base import EngineSettings
    from planner.memory import NHFMemory
    from planner.prior import packaged_prior

    assert not (grpo.output_dir / "ref").exists()
    summary = json.loads((grpo.output_dir / "training_summary.json").read_text())
    assert summary["stage"] == "grpo" and summary["rewards"] == grpo.rewards
    engine = create_engine(
        f"transformers:{tiny_qwen.text}", packaged_prior(), EngineSettings(adapter=str(grpo.output_dir))
    )
    try:
        scores = engine.rank(NHFMemory.from_history(["Tissue Retraction"], "Dissection"))
    finally:
        engine.close()
    assert len(scores) == 5


def test_prompts_come_from_training_videos_with_their_ground_truth(
    synthetic_annotations: Path, distilled_jsonl: Path, tmp_path: Path
) -> None:
    recipe = GrpoConfig(annotations=str(synthetic_annotations))
    rows = prompt_rows(recipe)
    assert len(rows) == 7 and all(r["prompt"][0]["role"] == "system" for r in rows)
    assert {r["target"] for r in rows} <= {"Dissection", "Coagulation", "Vessel Clipping", "Aspiration"}
    from_data = prompt_rows(GrpoConfig(data=str(distilled_jsonl)))
    assert [r["prompt"] for r in from_data] == [r["prompt"] for r in rows]  # the same chats, answer dropped
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(RecipeError, match=r"no meta\.target"):
        prompt_rows(GrpoConfig(data=str(bad)))
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GrpoConfig(num_generations=8, global_batch_size=12)
