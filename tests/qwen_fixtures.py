"""Tiny Qwen checkpoints built once per test session (no downloads), and a LoRA adapter for them.

Test modules that need them declare ``pytest_plugins = ["tests.qwen_fixtures"]``. Every fixture
skips with a reason when the model stack (torch, transformers, tokenizers, trl, peft) is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyQwen:
    text: Path  # Qwen2 (text) checkpoint folder
    vl: Path  # Qwen2-VL checkpoint folder


def _need_model_stack() -> None:
    for name in ("torch", "transformers", "tokenizers", "trl"):
        pytest.importorskip(name, reason=f"{name} is needed for the tiny Qwen models")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> TinyQwen:
    """A tiny Qwen2 and a tiny Qwen2-VL, with tokenizers trained here (built once per session)."""
    _need_model_stack()
    from training.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-qwen")
    return TinyQwen(text=build_tiny_model(root / "text"), vl=build_tiny_model(root / "vl", vl=True))


@pytest.fixture(scope="session")
def tiny_lora_adapter(tiny_qwen: TinyQwen, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter for the tiny text model, with random (non-zero) B matrices."""
    pytest.importorskip("peft", reason="peft is needed for LoRA adapters")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen.text)
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # the default zero B would leave the scores unchanged
        task_type="CAUSAL_LM",
    )
    out = tmp_path_factory.mktemp("tiny-lora")
    get_peft_model(base, config).save_pretrained(out)
    return out
