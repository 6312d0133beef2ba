"""Synthetic CholecT50-SAP annotations and distilled chats for the training tests (no real data needed).

Test modules that need them declare ``pytest_plugins = ["tests.qwen_fixtures", "tests.training_fixtures"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from planner.prior import SequencePrior
from training.cholect50 import load_annotations
from training.distill import ResponseCache, distill, write_chats
from training.recipes import DistillConfig
from training.samples import training_samples
from training.teachers import TeacherContext

TR, D, C, A, V = "Tissue Retraction", "Dissection", "Coagulation", "Aspiration", "Vessel Clipping"
SEQUENCES = {
    "VID01": [TR, D, C, D, V, D],
    "VID02": [D, TR, V, D, A],
    "VID06": [TR, D, C, A],  # one of the paper's test videos: must never be trained on
}


def write_annotations(path: Path) -> Path:
    """Two training videos (7 planning samples, all prompts distinct) and one test video."""
    raw: dict[str, Any] = {}
    for video, seq in SEQUENCES.items():
        clips: dict[str, Any] = {}
        for i, action in enumerate(seq):
            clip: dict[str, Any] = {"Action": action, "Action_Reg": action, "Frame_id": 20 * i}
            clip["Test"] = i >= 2
            if i >= 2:
                clip |= {
                    "Distant Actions": seq[: i - 1],
                    "Nearest Action": seq[i - 1],
                    "History": [20 * j for j in range(i)],
                    "Near Frames": [f"{video}/{20 * (i - 1) + k:06d}.png" for k in (0, 10)],
                    "Next Action": seq[i + 1] if i + 1 < len(seq) else "",
                }
            clips[str(i)] = clip
        raw[video] = clips
    path.write_text(json.dumps(raw))
    return path


def reference_context(annotations: Path, **settings: Any) -> TeacherContext:
    data = load_annotations(annotations)
    prior = SequencePrior.fit(data.sequences(data.train_videos), trained_on=data.train_videos)
    return TeacherContext(prior=prior, settings=DistillConfig(**settings))


@pytest.fixture(scope="session")
def synthetic_annotations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_annotations(tmp_path_factory.mktemp("annotations") / "annotations.json")


@pytest.fixture(scope="session")
def distilled_records(
    synthetic_annotations: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """The reference teacher's verified chats for the 7 synthetic training samples."""
    samples = training_samples(load_annotations(synthetic_annotations)).samples
    cache = ResponseCache(tmp_path_factory.mktemp("distill-cache"))
    return distill(samples, "reference", reference_context(synthetic_annotations), cache).records()


@pytest.fixture(scope="session")
def distilled_jsonl(
    distilled_records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("distilled") / "distilled.jsonl"
    write_chats(path, distilled_records)
    return path


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """The chat with a short answer ("1. Dissection\\n2. ...") that a tiny model learns in a few steps."""
    answer = json.loads(record["messages"][-1]["content"])
    text = "\n".join(f"{i}. {a['action']}" for i, a in enumerate(answer["next_actions"], 1))
    return {**record, "messages": [*record["messages"][:-1], {"role": "assistant", "content": text}]}


@pytest.fixture(scope="session")
def warm_sft(
    tiny_qwen: Any, distilled_records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """LoRA SFT of the tiny Qwen2 on short answers: GRPO's warm-up (a random model earns no reward)."""
    from training.recipes import LoraSettings, SftConfig
    from training.sft import run_sft

    root = tmp_path_factory.mktemp("warm-sft")
    write_chats(root / "compact.jsonl", [compact(r) for r in distilled_records])
    recipe = SftConfig(
        model=str(tiny_qwen.text),
        data=str(root / "compact.jsonl"),
        output_dir=str(root / "adapter"),
        max_steps=8,
        global_batch_size=2,
        per_device_batch_size=2,
        learning_rate=2e-2,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_length=1536,
        save_steps=8,
        precision="fp32",
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
    )
    return run_sft(recipe)
