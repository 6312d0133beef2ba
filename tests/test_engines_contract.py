"""One contract for every planning engine, run on real (tiny) models; plus engine-specific checks.

Engines: the prior; transformers on a tiny Qwen2 (one and three option orders) and on a tiny
Qwen2-VL seeing keyframes (DirNHFM); openai against a local OpenAI-compatible server over the tiny
model; trtllm (GPU only: skipped unless tensorrt_llm and CUDA are present).
"""

from __future__ import annotations

import gc
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from planner.actions import ACTIONS
from planner.engines import create_engine
from planner.engines.base import EngineSettings, PlanningEngine
from planner.engines.options import scoring_prompts
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings
from planner.prior import SequencePrior, packaged_prior

if TYPE_CHECKING:
    from tests.qwen_fixtures import TinyQwen

pytest_plugins = ["tests.qwen_fixtures"]

CAP = 12  # generated-token cap used by the contract


def keyframes(n: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Small random RGB frames, as the streamer hands them over."""
    rng = np.random.default_rng(seed)
    return [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(n)]


def sample_memory(with_frames: bool = False) -> NHFMemory:
    return NHFMemory.from_history(
        ["Dissection", "Coagulation"],
        "Tissue Retraction",
        caption=None if with_frames else "A grasper lifts the gallbladder fundus.",
        keyframes=keyframes() if with_frames else (),
    )


@pytest.fixture(scope="module")
def prior() -> SequencePrior:
    return packaged_prior()


@pytest.fixture(scope="module")
def openai_server(tiny_qwen: TinyQwen) -> Iterator[Any]:
    from tests.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(tiny_qwen.text) as server:
        yield server


def _trtllm_available() -> bool:
    try:
        import tensorrt_llm  # noqa: F401
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


Factory = Callable[[], tuple[PlanningEngine, NHFMemory]]


@pytest.fixture
def make_engine(request: pytest.FixtureRequest, prior: SequencePrior) -> Factory:
    """Builds the engine under test (fresh each call) and the memory it is asked about."""
    case: str = request.param

    def build() -> tuple[PlanningEngine, NHFMemory]:
        if case == "prior":
            return create_engine("prior", prior), sample_memory()
        if case == "learned":
            return create_engine("learned", prior), sample_memory()
        tiny: TinyQwen = request.getfixturevalue("tiny_qwen")
        if case == "transformers":
            return create_engine(
                f"transformers:{tiny.text}", prior, EngineSettings(threads=2)
            ), sample_memory()
        if case == "transformers-orders3":
            settings = EngineSettings(option_orders=3)
            return create_engine(f"transformers:{tiny.text}", prior, settings), sample_memory()
        if case == "transformers-vl-direct":
            settings = EngineSettings(variant="direct", option_orders=2)
            return create_engine(f"transformers:{tiny.vl}", prior, settings), sample_memory(with_frames=True)
        if case == "openai":
            server = request.getfixturevalue("openai_server")
            settings = EngineSettings(tokenizer=str(tiny.text), timeout_s=10)
            return create_engine(f"openai:{server.url}", prior, settings), sample_memory()
        if case == "trtllm":
            if not _trtllm_available():
                pytest.skip("needs tensorrt_llm and a CUDA GPU")
            return create_engine(f"trtllm:{tiny.text}", prior), sample_memory()
        raise AssertionError(case)

    return build


ENGINE_CASES = [
    "prior",
    "learned",
    "transformers",
    "transformers-orders3",
    "transformers-vl-direct",
    "openai",
    pytest.param("trtllm", marks=pytest.mark.gpu),
]
contract = pytest.mark.parametrize("make_engine", ENGINE_CASES, indirect=True)


@contract
def test_rank_gives_a_finite_log_score_to_every_action(make_engine: Factory) -> None:
    engine, memory = make_engine()
    scores = engine.rank(memory)
    assert set(scores) == set(ACTIONS)
    others = [v for a, v in scores.items() if a != memory.current_action]
    assert all(math.isfinite(v) and v <= 1e-9 for v in others), scores
    assert scores[memory.current_action or ""] <= 1e-9  # the prior gives the current action -inf
    assert sum(math.exp(v) for v in scores.values()) == pytest.approx(1.0, abs=1e-6)
    engine.close()


@contract
def test_rank_is_deterministic_and_the_same_from_another_thread(make_engine: Factory) -> None:
    engine, memory = make_engine()
    first = engine.rank(memory)
    again = engine.rank(memory)
    other: dict[str, dict[str, float]] = {}
    worker = threading.Thread(target=lambda: other.update(scores=engine.rank(memory)), name="engine-test")
    worker.start()
    worker.join(timeout=60)
    assert again == pytest.approx(first, abs=1e-6)
    assert other["scores"] == pytest.approx(first, abs=1e-6)
    engine.close()


@contract
def test_generate_streams_text_within_the_token_cap(make_engine: Factory) -> None:
    engine, memory = make_engine()
    chunks = list(engine.generate(memory, max_tokens=CAP))
    assert all(isinstance(c, str) and c for c in chunks)
    if engine.name != "prior":  # the prior writes one JSON chunk; model engines one chunk per token at most
        assert 0 < len(chunks) <= CAP
    if engine.name == "transformers":
        assert 0 < engine.last_generated_tokens <= CAP  # type: ignore[attr-defined]
    engine.close()


@contract
def test_close_releases_the_engine(make_engine: Factory) -> None:
    engine, memory = make_engine()
    engine.rank(memory)
    model_ref = None
    if engine.name == "transformers":
        model_ref = weakref.ref(engine.lm.model)  # type: ignore[attr-defined]
    engine.close()
    engine.close()  # idempotent
    if engine.name == "prior":
        return
    with pytest.raises(EngineError, match="closed"):
        engine.rank(memory)
    if model_ref is not None:
        gc.collect()
        assert model_ref() is None, "the model is still referenced after close()"


# ---- transformers: the prefix cache ------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "settings", "frames"),
    [
        ("text", EngineSettings(), False),
        ("text", EngineSettings(option_orders=3), False),
        ("vl", EngineSettings(variant="direct", option_orders=2), True),
        ("vl", EngineSettings(variant="indirect"), False),
    ],
    ids=["text", "text-orders3", "vl-direct", "vl-indirect"],
)
def test_prefix_cached_ranking_equals_a_full_recompute(
    tiny_qwen: TinyQwen, prior: SequencePrior, model: str, settings: EngineSettings, frames: bool
) -> None:
    engine = create_engine(f"transformers:{getattr(tiny_qwen, model)}", prior, settings)
    memory = sample_memory(with_frames=frames)
    cached = engine.rank(memory)
    full = engine.rank(memory, use_cache=False)  # type: ignore[call-arg]
    assert cached == pytest.approx(full, abs=1e-4)
    lm = engine.lm  # type: ignore[attr-defined]
    assert lm.fallbacks == 0
    messages = scoring_prompts(memory, settings.variant, 1)[0].messages
    if model == "text":  # suffix-only tokenizing gives exactly the full prompt's ids
        assert lm.encode(messages).ids.tolist() == lm._tokenize(lm.render(messages))
    assert engine.lm.prefix_len > 500  # type: ignore[attr-defined]  # the knowledge base is cached
    assert engine.rank(memory) == pytest.approx(cached, abs=1e-6)  # the cache was restored after use


def test_vl_scores_on_the_cached_prefix_match_the_models_own_m_rope_forward(tiny_qwen: TinyQwen) -> None:
    """The explicit M-RoPE positions equal what Qwen2-VL computes itself from a full prompt."""
    import torch

    from planner.engines.hf_loading import load_model
    from planner.engines.prefix_cache import PrefixCachedLM
    from planner.engines.vision import to_pil
    from planner.prompts import APPrompts, system_message

    loaded = load_model(tiny_qwen.vl, EngineSettings())
    lm = PrefixCachedLM(loaded, [system_message()], threads=None)
    messages = APPrompts.options(sample_memory(with_frames=True), "direct").messages
    text = lm.render(messages)
    inputs = loaded.processor(text=[text], images=[to_pil(f) for f in keyframes()], return_tensors="pt")
    loaded.model.model.rope_deltas = None
    with torch.inference_mode():
        reference = torch.log_softmax(loaded.model(**inputs).logits[0, -1].float(), dim=-1)
    cached = lm.next_token_logprobs([lm.encode(messages)])[0]
    assert (cached - reference).abs().max().item() < 1e-4


def test_a_prompt_that_does_not_extend_the_prefix_falls_back_to_full_recompute(tiny_qwen: TinyQwen) -> None:
    from planner.engines.hf_loading import load_model
    from planner.engines.prefix_cache import PrefixCachedLM
    from planner.prompts import APPrompts

    loaded = load_model(tiny_qwen.text, EngineSettings())
    other = PrefixCachedLM(loaded, [{"role": "system", "content": "Another system prompt."}], threads=None)
    messages = APPrompts.options(sample_memory()).messages
    enc = other.encode(messages)
    assert not enc.cacheable and other.fallbacks == 1
    reference = other.next_token_logprobs([enc], use_cache=False)
    assert other.next_token_logprobs([enc]).sub(reference).abs().max().item() < 1e-5


def test_option_orders_change_which_letter_stands_for_each_action(
    tiny_qwen: TinyQwen, prior: SequencePrior
) -> None:
    one = create_engine(f"transformers:{tiny_qwen.text}", prior).rank(sample_memory())
    five = create_engine(f"transformers:{tiny_qwen.text}", prior, EngineSettings(option_orders=5))
    averaged = five.rank(sample_memory())
    assert averaged != pytest.approx(one, abs=1e-3)
    # with all five cyclic orders every action sits once at every letter: position bias cancels
    spread = max(averaged.values()) - min(averaged.values())
    assert spread < max(one.values()) - min(one.values())


def test_direct_variant_needs_a_vision_checkpoint(tiny_qwen: TinyQwen, prior: SequencePrior) -> None:
    with pytest.raises(EngineError, match="needs a Qwen2-VL checkpoint"):
        create_engine(f"transformers:{tiny_qwen.text}", prior, EngineSettings(variant="direct"))
    with pytest.raises(EngineError, match=r"no model checkpoint at '/nonexistent'"):
        create_engine("transformers:/nonexistent", prior)


# ---- transformers: adapter and captioner --------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft calls the old name
def test_a_lora_adapter_loads_through_settings_and_changes_the_scores(
    tiny_qwen: TinyQwen, tiny_lora_adapter: Path, prior: SequencePrior
) -> None:
    base = create_engine(f"transformers:{tiny_qwen.text}", prior).rank(sample_memory())
    adapted = create_engine(
        f"transformers:{tiny_qwen.text}", prior, EngineSettings(adapter=str(tiny_lora_adapter))
    )
    scores = adapted.rank(sample_memory())
    assert str(tiny_lora_adapter) in adapted.model
    assert max(abs(scores[a] - base[a]) for a in ACTIONS) > 1e-3
    assert adapted.rank(sample_memory(), use_cache=False) == pytest.approx(scores, abs=1e-4)  # type: ignore[call-arg]


def test_the_captioner_writes_c_t_once_per_clip_and_the_planner_reads_it(
    tiny_qwen: TinyQwen, prior: SequencePrior
) -> None:
    engine = create_engine(
        f"transformers:{tiny_qwen.text}", prior, EngineSettings(captioner=str(tiny_qwen.vl))
    )
    captioner = engine.captioner  # type: ignore[attr-defined]
    memory = NHFMemory.from_history(["Dissection"], "Coagulation", keyframes=keyframes(3))
    first = engine.rank(memory)
    assert (captioner.misses, captioner.hits) == (1, 0)
    assert engine.rank(memory) == pytest.approx(first, abs=1e-6)
    assert (captioner.misses, captioner.hits) == (1, 1)
    caption = captioner.caption(memory.near)
    assert caption  # the tiny VL model writes something
    plain = create_engine(f"transformers:{tiny_qwen.text}", prior)
    assert plain.rank(memory.with_caption(caption)) == pytest.approx(first, abs=1e-5)
    assert plain.rank(memory) != pytest.approx(first, abs=1e-4)  # without C_t the prompt differs
    next_clip = memory.start_clip("Dissection", start_s=30.0).with_keyframes(keyframes(2, seed=5))
    engine.rank(next_clip)
    assert captioner.misses == 2


# ---- openai ------------------------------------------------------------------------------------
def test_openai_scores_match_the_transformers_engine_when_all_letters_are_listed(
    tiny_qwen: TinyQwen, openai_server: Any, prior: SequencePrior
) -> None:
    from planner.engines.chatml import make_renderer
    from planner.engines.http_client import HttpSettings, JsonClient
    from planner.engines.openai_engine import OpenAIEngine

    settings = EngineSettings(option_orders=3)
    client = JsonClient(openai_server.url, HttpSettings())
    wide = OpenAIEngine(client, settings, make_renderer(str(tiny_qwen.text)), top_logprobs=5000)
    local = create_engine(f"transformers:{tiny_qwen.text}", prior, settings)
    assert wide.rank(sample_memory()) == pytest.approx(local.rank(sample_memory()), abs=1e-4)
    assert wide.model_name == "tiny-qwen"  # asked from GET /models


def test_openai_chatml_fallback_renders_what_the_tokenizer_template_renders(
    tiny_qwen: TinyQwen, openai_server: Any, prior: SequencePrior
) -> None:
    with_tok = create_engine(
        f"openai:{openai_server.url}", prior, EngineSettings(tokenizer=str(tiny_qwen.text))
    )
    chatml = create_engine(f"openai:{openai_server.url}", prior, EngineSettings(model_name="tiny-qwen"))
    assert chatml.rank(sample_memory()) == pytest.approx(with_tok.rank(sample_memory()), abs=1e-9)


def test_openai_retries_5xx_and_fails_fast_on_4xx(
    tiny_qwen: TinyQwen, openai_server: Any, prior: SequencePrior
) -> None:
    engine = create_engine(
        f"openai:{openai_server.url}", prior, EngineSettings(model_name="tiny-qwen", retries=2)
    )
    expected = engine.rank(sample_memory())
    before = len(openai_server.requests)
    openai_server.fail_next[:] = [503, 502]
    assert engine.rank(sample_memory()) == pytest.approx(expected)
    assert len(openai_server.requests) - before == 3
    openai_server.fail_next[:] = [400]
    with pytest.raises(EngineError, match="HTTP 400: injected failure 400"):
        engine.rank(sample_memory())
    wrong = create_engine(f"openai:{openai_server.url}", prior, EngineSettings(model_name="nope", retries=0))
    with pytest.raises(EngineError, match="HTTP 404: The model `nope` does not exist"):
        wrong.rank(sample_memory())
    gone = create_engine(
        "openai:http://127.0.0.1:9/v1", prior, EngineSettings(model_name="x", retries=1, timeout_s=2)
    )
    with pytest.raises(EngineError, match="after 2 tries"):
        gone.rank(sample_memory())


# ---- the planner -------------------------------------------------------------------------------
def test_the_planner_fuses_a_qwen_engine_and_degrades_to_the_prior_when_it_is_slow(
    tiny_qwen: TinyQwen, openai_server: Any, prior: SequencePrior
) -> None:
    engine = create_engine(f"openai:{openai_server.url}", prior, EngineSettings(model_name="tiny-qwen"))
    planner = Planner(engine, prior, PlannerSettings(deadline_s=0.5, failure_threshold=5))
    memory = sample_memory()
    try:
        fresh = planner.recommend(memory)
        assert not fresh.degraded and fresh.engine == "openai"
        assert fresh.ranked[0].action != memory.current_action
        openai_server.delay_s = 1.5
        slow = planner.recommend(memory)
        assert slow.degraded and slow.engine == "prior"
        assert "deadline" in (slow.degraded_reason or "")
    finally:
        openai_server.delay_s = 0.0
        planner.close()


def test_the_planner_runs_the_transformers_engine_in_its_worker_thread(
    tiny_qwen: TinyQwen, prior: SequencePrior
) -> None:
    engine = create_engine(f"transformers:{tiny_qwen.text}", prior)
    seen: list[str] = []
    rank = engine.rank
    engine.rank = lambda m: (seen.append(threading.current_thread().name), rank(m))[1]  # type: ignore[method-assign]
    planner = Planner(engine, prior, PlannerSettings(deadline_s=30))
    try:
        rec = planner.recommend(sample_memory())
        explained = planner.explain(sample_memory(), rec)
    finally:
        planner.close()
    assert not rec.degraded and rec.model == str(tiny_qwen.text)
    assert seen and seen[0].startswith("engine-transformers")
    assert explained.timings_ms["generate"] > 0
