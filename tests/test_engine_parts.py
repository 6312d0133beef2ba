"""The engines' pure parts (letters, orders, log-prob maps, TensorRT-LLM options, HTTP retries,
ChatML), and the tiny-model builder and its command."""

from __future__ import annotations

import importlib.util
import math
from collections import namedtuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from planner.actions import ACTIONS, OPTION_LETTERS
from planner.engines import available_engines, create_engine
from planner.engines.base import EngineSettings
from planner.engines.chatml import render_chatml
from planner.engines.http_client import HttpSettings, JsonClient
from planner.engines.openai_engine import top_logprobs_of
from planner.engines.options import (
    action_scores,
    letter_token_ids,
    letters_from_top_logprobs,
    option_orders,
    restricted_log_softmax,
    scoring_prompts,
)
from planner.engines.trtllm_engine import MISSING, letter_logprobs_from_topk, llm_options
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.prior import packaged_prior
from planner.prompts import APPrompts, DCPrompts

if TYPE_CHECKING:
    from tests.qwen_fixtures import TinyQwen

pytest_plugins = ["tests.qwen_fixtures"]

MEMORY = NHFMemory.from_history(["Dissection"], "Coagulation", caption="A hook near the cystic duct.")


def test_the_model_engines_are_registered() -> None:
    assert {"prior", "transformers", "openai", "trtllm"} <= set(available_engines())


# ---- option orders and letter scores ------------------------------------------------------------
def test_option_orders_are_distinct_deterministic_and_start_with_cyclic_shifts() -> None:
    assert option_orders(1) == [ACTIONS]
    five = option_orders(5)
    for position in range(5):  # each action sits once at each letter
        assert sorted(order[position] for order in five) == sorted(ACTIONS)
    seven = option_orders(7)
    assert seven[:5] == five and len(set(seven)) == 7 and option_orders(7) == seven
    assert len(set(option_orders(120))) == 120
    for bad in (0, 121):
        with pytest.raises(ValueError, match="option order count"):
            option_orders(bad)


def test_letter_log_probs_map_back_to_actions_through_each_prompts_order() -> None:
    prompts = scoring_prompts(MEMORY, "indirect", 2)
    raw = [{"A": -0.1, "B": -3.0, "C": -3.0, "D": -3.0, "E": -3.0}] * 2  # the model always says "A"
    scores = action_scores(raw, prompts)
    assert sum(math.exp(v) for v in scores.values()) == pytest.approx(1.0)
    # "A" is ACTIONS[0] in the first order and ACTIONS[1] in the second: they share the top
    assert scores[ACTIONS[0]] == pytest.approx(scores[ACTIONS[1]])
    assert scores[ACTIONS[0]] > max(scores[a] for a in ACTIONS[2:])
    normed = restricted_log_softmax(raw[0])
    assert sum(math.exp(v) for v in normed.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one letter score map per prompt"):
        action_scores(raw[:1], prompts)


def test_letters_missing_from_a_servers_top_logprobs_get_a_floor_below_every_listed_token() -> None:
    top = {"A": -0.5, " B": -0.7, "C": -1.0, "x": -60.0}
    letters = letters_from_top_logprobs(top)
    assert letters["A"] == -0.5 and letters["C"] == -1.0
    assert letters["B"] == letters["D"] == letters["E"] < -60.0  # " B" is not the letter token "B"
    assert letters_from_top_logprobs({"A": -1.0})["B"] == -30.0  # the default floor


def test_top_logprobs_are_read_from_completion_and_chat_shapes() -> None:
    legacy = {"logprobs": {"tokens": ["A"], "top_logprobs": [{"A": -0.1, "B": -2.5}]}}
    chat = {"logprobs": {"content": [{"token": "A", "top_logprobs": [{"token": "C", "logprob": -1.5}]}]}}
    assert top_logprobs_of(legacy) == {"A": -0.1, "B": -2.5}
    assert top_logprobs_of(chat) == {"C": -1.5}
    with pytest.raises(EngineError, match="no top log-probs"):
        top_logprobs_of({"text": "A", "logprobs": None})


def test_each_option_letter_must_be_one_token() -> None:
    class SplitsD:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [1, 2] if text == "D" else [ord(text)]

    with pytest.raises(EngineError, match="option letter 'D' is 2 tokens"):
        letter_token_ids(SplitsD(), "a test tokenizer")


# ---- TensorRT-LLM: the parts that run without a GPU -------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is not None, reason="tensorrt_llm is installed")
def test_trtllm_says_clearly_when_it_is_not_installed(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        create_engine(f"trtllm:{tmp_path}", packaged_prior())
    assert (
        str(err.value)
        == MISSING
        == "tensorrt_llm is not installed (pip install llm-sap[trtllm] on a CUDA machine)"
    )


def test_trtllm_turns_block_reuse_off_for_qwen2_vl_only() -> None:
    settings = EngineSettings(tensor_parallel_size=4, dtype="bfloat16")
    text = llm_options(settings, "qwen2")
    assert text == {
        "tensor_parallel_size": 4,
        "dtype": "bfloat16",
        "enable_block_reuse": True,
        "is_vl": False,
    }
    assert llm_options(settings, "qwen2_vl")["enable_block_reuse"] is False
    assert llm_options(EngineSettings(), "qwen2")["dtype"] == "auto"  # fp32 is not what a GPU serves


def test_trtllm_letter_logprobs_come_from_token_ids_with_a_floor() -> None:
    logprob = namedtuple("logprob", "logprob rank")
    ids = dict(zip(OPTION_LETTERS, (10, 11, 12, 13, 14), strict=True))
    top = {10: logprob(-0.2, 1), 12: logprob(-1.7, 2), 99: logprob(-4.0, 3)}
    letters = letter_logprobs_from_topk(top, ids)
    assert letters["A"] == -0.2 and letters["C"] == -1.7
    assert letters["B"] == letters["D"] == letters["E"] < -4.0
    assert letter_logprobs_from_topk({11: -0.3}, ids)["B"] == -0.3  # plain floats work too


def test_trtllm_engine_drives_the_llm_api_as_documented() -> None:
    """The engine against a stand-in for ``tensorrt_llm.LLM`` with the documented result shapes."""
    from types import SimpleNamespace

    from planner.engines.trtllm_engine import TrtllmEngine

    logprob = namedtuple("logprob", "logprob rank")

    class FakeLLM:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []
            self.shut = False

        def generate(self, inputs: list[Any], params: Any, **kwargs: Any) -> list[Any]:
            self.calls.append((inputs, params.kwargs, kwargs))
            top = {10: logprob(-0.1, 1), 11: logprob(-2.0, 2), 12: logprob(-2.0, 3), 13: logprob(-2.0, 4)}
            top[14] = logprob(-2.0, 5)
            return [SimpleNamespace(outputs=[SimpleNamespace(logprobs=[top])]) for _ in inputs]

        def generate_async(self, prompt: Any, params: Any, streaming: bool, **kwargs: Any) -> Any:
            assert streaming and params.kwargs["max_tokens"] == 7
            return iter([SimpleNamespace(outputs=[SimpleNamespace(text_diff=t)]) for t in ("{", "", '"a"}')])

        def shutdown(self) -> None:
            self.shut = True

    class Params:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    llm = FakeLLM()
    ids = dict(zip(OPTION_LETTERS, (10, 11, 12, 13, 14), strict=True))
    settings = EngineSettings(option_orders=2)
    engine = TrtllmEngine(llm, Params, settings, render_chatml, ids, False, "LORA", "m")
    scores = engine.rank(MEMORY)
    inputs, params, kwargs = llm.calls[0]
    assert params == {"max_tokens": 1, "temperature": 1.0, "logprobs": 20}
    assert kwargs == {"lora_request": ["LORA", "LORA"]} and len(inputs) == 2
    assert inputs[0].startswith("<|im_start|>system\n") and inputs[0].endswith("<|im_start|>assistant\n")
    assert scores[ACTIONS[0]] == pytest.approx(scores[ACTIONS[1]])  # "A" in both orders
    assert scores[ACTIONS[0]] > scores[ACTIONS[2]]
    assert list(engine.generate(MEMORY, max_tokens=7)) == ["{", '"a"}']
    engine.close()
    assert llm.shut
    with pytest.raises(EngineError, match="closed"):
        engine.rank(MEMORY)


def test_trtllm_refuses_a_release_that_returns_only_the_sampled_tokens_logprob() -> None:
    from types import SimpleNamespace

    from planner.engines.trtllm_engine import check_topk_logprobs

    def output(n: int) -> Any:
        return SimpleNamespace(outputs=[SimpleNamespace(logprobs=[{i: -1.0 - i for i in range(n)}])])

    assert check_topk_logprobs(output(20), 20) == 20
    with pytest.raises(EngineError, match=r"returned 1 log-prob\(s\) per position where 20 were asked"):
        check_topk_logprobs(output(1), 20)


# ---- HTTP client and ChatML ---------------------------------------------------------------------
def test_http_client_backs_off_exponentially_then_names_the_failure() -> None:
    waits: list[float] = []
    client = JsonClient(
        "http://127.0.0.1:9/v1", HttpSettings(retries=2, backoff_s=0.1, timeout_s=2), waits.append
    )
    with pytest.raises(EngineError, match=r"POST http://127.0.0.1:9/v1/completions: .* \(after 3 tries\)"):
        client.post("/completions", {})
    assert waits == [0.1, 0.2]
    with pytest.raises(EngineError, match="must start with http"):
        JsonClient("localhost:8000/v1", HttpSettings())


def test_chatml_renders_like_the_qwen_template_and_refuses_images(tiny_qwen: TinyQwen) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen.text)
    for prompt in (APPrompts.plan(MEMORY), APPrompts.options(MEMORY)):
        expected = tokenizer.apply_chat_template(
            list(prompt.messages), tokenize=False, add_generation_prompt=True
        )
        assert render_chatml(prompt.messages) == expected
    with pytest.raises(EngineError, match="text messages only"):
        render_chatml(DCPrompts.caption("frame.png").messages)
    with pytest.raises(EngineError, match="explicit system message"):
        render_chatml([{"role": "user", "content": "hi"}])


# ---- tiny models --------------------------------------------------------------------------------
def test_tiny_tokenizers_reload_with_the_same_ids_and_single_token_letters(tiny_qwen: TinyQwen) -> None:
    from transformers import AutoTokenizer

    from training.tiny_models import build_tokenizer

    text = "\n".join(str(m["content"]) for m in APPrompts.options(MEMORY).messages) + " Ünïcode 42 <|im_end|>"
    for path, vl in ((tiny_qwen.text, False), (tiny_qwen.vl, True)):
        reloaded = AutoTokenizer.from_pretrained(path)
        assert reloaded(text)["input_ids"] == build_tokenizer(vl)(text)["input_ids"]
        assert all(len(reloaded.encode(x, add_special_tokens=False)) == 1 for x in OPTION_LETTERS)
        assert reloaded.eos_token == "<|im_end|>" and reloaded.pad_token == "<|endoftext|>"


def test_tiny_model_command_writes_a_loadable_checkpoint_once(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from training.cli import main

    out = tmp_path / "tiny"
    assert main(["tiny-model", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    assert main(["tiny-model", str(out)]) == 2  # refuses to overwrite a checkpoint
    assert main(["tiny-model", str(tmp_path / "x"), "--size", "7b"]) == 2


def test_0_5b_config_has_the_qwen2_5_0_5b_shape() -> None:
    pytest.importorskip("transformers")
    from training.tiny_models import text_config, vl_config

    class Tok:
        pad_token_id = 0

        def __len__(self) -> int:
            return 1000

        def convert_tokens_to_ids(self, token: str) -> int:
            return 1

    cfg: Any = text_config(Tok(), "0.5b")
    shape = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    assert shape == (896, 24, 14, 2) and cfg.intermediate_size == 4864 and cfg.vocab_size == 1000
    vl: Any = vl_config(Tok(), "0.5b")
    head_dim = vl.text_config.hidden_size // vl.text_config.num_attention_heads
    assert sum(vl.text_config.rope_parameters["mrope_section"]) * 2 == head_dim
    with pytest.raises(ValueError, match="model size must be one of"):
        text_config(Tok(), "7b")  # type: ignore[arg-type]


def test_keyframes_become_rgb_images(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    from planner.engines.vision import to_pil

    assert to_pil(np.zeros((4, 6), dtype=np.uint8)).size == (6, 4)
    assert to_pil(np.full((4, 6, 3), 0.5)).getpixel((0, 0)) == (127, 127, 127)
    path = tmp_path / "f.png"
    Image.new("RGBA", (5, 3)).save(path)
    assert to_pil(str(path)).mode == "RGB"
    with pytest.raises(EngineError, match="HxWx3"):
        to_pil(np.zeros((2, 2, 2)))
    with pytest.raises(EngineError, match="got int"):
        to_pil(3)
