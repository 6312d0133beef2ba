"""LoRA SFT with TRL on the tiny Qwen2: what moves, what stays, and where the adapter goes afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from planner.response import parse_response
from tests.qwen_fixtures import TinyQwen
from training.cli import main
from training.exceptions import UsageError
from training.recipes import LoraSettings, SftConfig
from training.sft import SftResult, option_rows, run_sft

pytest_plugins = ["tests.qwen_fixtures", "tests.training_fixtures"]


def tiny_recipe(model: Path, data: Path, out: Path, **changes: Any) -> SftConfig:
    values: dict[str, Any] = {
        "model": str(model),
        "data": str(data),
        "output_dir": str(out),
        "max_steps": 2,
        "global_batch_size": 2,
        "per_device_batch_size": 2,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_length": 1536,
        "option_examples": 1,
        "save_steps": 2,
        "precision": "fp32",
        "lora": LoraSettings(r=8, alpha=16, dropout=0.0),
    }
    return SftConfig(**(values | changes))


@pytest.fixture
def sft(warm_sft: SftResult) -> SftResult:
    """8 LoRA steps on the tiny Qwen2 (shared with the GRPO tests, which start from it)."""
    return warm_sft


def _probe(tiny_qwen: TinyQwen) -> Any:
    from transformers import AutoTokenizer

    from training.merge import probe_text

    tok = AutoTokenizer.from_pretrained(tiny_qwen.text)
    return tok(probe_text(tok), return_tensors="pt", add_special_tokens=False)["input_ids"]


def _logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model.eval()(input_ids=ids).logits


def test_a_lora_step_moves_every_adapter_matrix_and_no_base_weight(
    sft: SftResult, tiny_qwen: TinyQwen
) -> None:
    from transformers import AutoModelForCausalLM

    assert sft.steps == 8 and len(sft.losses) == 8 and sft.losses[-1] < sft.losses[0]
    params = dict(sft.model.named_parameters())
    lora_b = {n: p for n, p in params.items() if "lora_B" in n}
    assert len(lora_b) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    assert all(p.detach().abs().sum() > 0 for p in lora_b.values())  # B starts at zero
    assert all(p.requires_grad == ("lora_" in n) for n, p in params.items())
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen.text).state_dict()
    trained = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in params.items()}
    frozen = {n: p for n, p in trained.items() if "lora_" not in n}
    assert set(frozen) == set(base) - {"lm_head.weight"}  # tied to the embeddings
    assert all(p.detach().equal(base[n]) for n, p in frozen.items())


def test_the_saved_adapter_reloads_with_identical_logits_and_merges(
    sft: SftResult, tiny_qwen: TinyQwen, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.merge import merge_adapter

    ids = _probe(tiny_qwen)
    in_memory = _logits(sft.model, ids)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen.text), sft.output_dir)
    assert _logits(reloaded, ids).equal(in_memory)
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_qwen.text), ids)
    assert (base - in_memory).abs().max() > 1e-3  # the adapter does change the model

    result = merge_adapter(tiny_qwen.text, sft.output_dir, tmp_path / "merged")
    # the next-token logits (what the planner ranks with) agree within 1e-4; over all 1000+ positions
    # float32 accumulation noise reaches ~1e-4 (fp32 vs fp64 alone differ by ~5e-5 here)
    assert result.max_abs_diff_next < 1e-4 and result.max_abs_diff < 1e-3
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (_logits(merged, ids)[0, -1] - in_memory[0, -1]).abs().max() < 1e-4
    assert (tmp_path / "merged" / "tokenizer.json").is_file()


def test_the_adapter_loads_into_the_planner_engine_and_changes_its_scores(
    sft: SftResult, tiny_qwen: TinyQwen
) -> None:
    from planner.engines import create_engine
    from planner.engines.base import EngineSettings
    from planner.memory import NHFMemory
    from planner.prior import packaged_prior

    memory = NHFMemory.from_history(["Tissue Retraction", "Dissection"], "Coagulation")
    spec = f"transformers:{tiny_qwen.text}"
    plain = create_engine(spec, packaged_prior(), EngineSettings())
    tuned = create_engine(spec, packaged_prior(), EngineSettings(adapter=str(sft.output_dir)))
    try:
        before, after = plain.rank(memory), tuned.rank(memory)
    finally:
        plain.close()
        tuned.close()
    assert set(after) == set(before) and max(abs(after[a] - before[a]) for a in before) > 1e-4


def test_distilled_json_chats_train_and_resume_from_the_last_checkpoint(
    tiny_qwen: TinyQwen, distilled_jsonl: Path, tmp_path: Path
) -> None:
    first = run_sft(tiny_recipe(tiny_qwen.text, distilled_jsonl, tmp_path / "a", max_steps=1, save_steps=1))
    assert first.examples == 14  # 7 chats + 1 option-letter chat each
    recipe = tiny_recipe(tiny_qwen.text, distilled_jsonl, tmp_path / "a", max_steps=2)
    with pytest.raises(UsageError, match="holds checkpoints"):
        run_sft(recipe)
    resumed = run_sft(recipe, resume=True)
    assert resumed.steps == 2 and len(resumed.losses) == 1  # only step 2 ran
    with pytest.raises(UsageError, match="no checkpoint"):
        run_sft(tiny_recipe(tiny_qwen.text, distilled_jsonl, tmp_path / "fresh"), resume=True)


def test_option_examples_answer_with_the_teachers_top1(distilled_records: list[dict[str, Any]]) -> None:
    record = distilled_records[0]
    top1 = parse_response(record["messages"][-1]["content"]).ranked_labels[0]  # type: ignore[union-attr]
    rows = option_rows(record, 5)
    assert len(rows) == 5 and len({r["messages"][1]["content"] for r in rows}) == 5  # five letter orders
    for row in rows:
        letter = row["messages"][-1]["content"]
        assert f"{letter}. {top1}" in row["messages"][1]["content"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["training.sft.lora.r=0"], "training.sft.lora.r = 0"),
        (["training.sft.epochs_typo=3"], "training.sft.epochs_typo"),
        ([], "config keys not set: training.sft.model, training.sft.data, training.sft.output_dir"),
        (
            ["training.sft.model='/nowhere'", "training.sft.data='x'", "training.sft.output_dir='o'"],
            "config.json",
        ),
    ],
)
def test_bad_recipes_are_one_clear_error(
    sets: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sft"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err


def test_the_shipped_recipes_validate() -> None:
    from training.config import load_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    names = ["sft-tiny", "sft-paper-qwen2.5-7b", "sft-paper-qwen2.5-32b", "sft-paper-qwen2.5-72b",
             "sft-paper-qwen2-vl-7b", "grpo-tiny", "grpo-paper"]  # fmt: skip
    for name in names:
        cfg = load_config([configs / f"{name}.toml"])
        assert cfg.model_dump_json()
    paper = load_config([configs / "sft-paper-qwen2.5-32b.toml"]).training.sft
    assert (paper.epochs, paper.learning_rate, paper.global_batch_size) == (50, 1e-4, 8)
    assert paper.precision == "bf16" and paper.accumulation(8) == 1 and paper.accumulation(1) == 8
    with pytest.raises(ValueError, match="not a multiple"):
        SftConfig(global_batch_size=3, per_device_batch_size=2).accumulation(1)
    grpo = load_config([configs / "grpo-paper.toml"]).training.grpo
    assert (grpo.num_generations, grpo.learning_rate, grpo.beta) == (8, 1e-6, 1e-2)
    assert json.loads(paper.model_dump_json())["lora"]["r"] == 8


def test_dirnhfm_chats_train_qwen2_vl_and_the_adapter_ranks_with_frames(
    tiny_qwen: TinyQwen, synthetic_annotations: Path, tmp_path: Path
) -> None:
    import numpy as np
    from PIL import Image

    from planner.engines import create_engine
    from planner.engines.base import EngineSettings
    from planner.memory import NHFMemory
    from planner.prior import packaged_prior
    from tests.training_fixtures import reference_context
    from training.cholect50 import load_annotations
    from training.distill import ResponseCache, distill, write_chats
    from training.samples import training_samples

    data = load_annotations(synthetic_annotations)
    rng = np.random.default_rng(0)
    for sample in data.split("train")[:2]:  # frames for two samples; the others are skipped
        for frame in sample.near_frames:
            (tmp_path / "frames" / frame).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
                tmp_path / "frames" / frame
            )
    samples = training_samples(data, "direct", frame_root=tmp_path / "frames").samples
    ctx = reference_context(synthetic_annotations, variant="direct")
    records = distill(samples, "reference", ctx, ResponseCache(tmp_path / "cache")).records()
    write_chats(tmp_path / "direct.jsonl", records)
    result = run_sft(
        tiny_recipe(tiny_qwen.vl, tmp_path / "direct.jsonl", tmp_path / "vl", max_steps=1, max_length=2048)
    )
    assert result.steps == 1 and result.examples == 4
    assert (result.output_dir / "preprocessor_config.json").is_file()  # the processor, saved in parts

    frames = [p["image"] for p in records[0]["messages"][1]["content"] if p["type"] == "image"]
    memory = NHFMemory.from_history(
        records[0]["meta"]["distant"], records[0]["meta"]["nearest"], keyframes=frames
    )
    spec = f"transformers:{tiny_qwen.vl}"
    plain = create_engine(spec, packaged_prior(), EngineSettings(variant="direct"))
    tuned = create_engine(
        spec, packaged_prior(), EngineSettings(variant="direct", adapter=str(result.output_dir))
    )
    try:
        before, after = plain.rank(memory), tuned.rank(memory)
    finally:
        plain.close()
        tuned.close()
    assert max(abs(after[a] - before[a]) for a in before) > 1e-4
