import math
import threading
import time
from collections.abc import Iterator

import pytest

from planner.actions import ACTIONS
from planner.engines import create_engine
from planner.exceptions import UnknownEngineError
from planner.memory import NHFMemory
from planner.planner import Planner, PlannerSettings, fuse
from planner.prior import SequencePrior, packaged_prior


class FakeEngine:
    """A model engine stand-in whose speed and answers the test controls."""

    name = "fake"
    model = "fake-model"

    def __init__(self, favourite: str = "Aspiration", delay_s: float = 0.0, fail: bool = False) -> None:
        self.favourite, self.delay_s, self.fail = favourite, delay_s, fail
        self.calls = 0
        self.release = threading.Event()

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        self.calls += 1
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        return {a: (0.0 if a == self.favourite else -5.0) for a in ACTIONS}

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        yield '{"progress_assessment": "p", "safety_considerations": "s", "next_actions": ["Aspiration"]}'

    def close(self) -> None:
        self.release.set()


MEMORY = NHFMemory.from_history(["Tissue Retraction"], "Dissection")


def test_prior_planner_ranks_all_five_never_current_first() -> None:
    prior = packaged_prior()
    planner = Planner(create_engine("prior", prior), prior)
    rec = planner.recommend(MEMORY)
    assert sorted(rec.ranked_labels) == sorted(ACTIONS)
    assert rec.ranked_labels[-1] == "Dissection" and rec.ranked[-1].score == 0.0
    assert math.isclose(sum(s.score for s in rec.ranked), 1.0, abs_tol=1e-5)
    assert [s.score for s in rec.ranked] == sorted((s.score for s in rec.ranked), reverse=True)
    assert not rec.degraded and rec.engine == "prior"


def test_prior_engine_text_parses_into_a_complete_response() -> None:
    prior = packaged_prior()
    planner = Planner(create_engine("prior", prior), prior)
    rec = planner.explain(MEMORY, planner.recommend(MEMORY))
    assert rec.response is not None and rec.response.complete
    assert rec.response.ranked_labels == rec.ranked_labels[:3]


def test_fusion_combines_engine_and_prior() -> None:
    prior = packaged_prior()
    engine = FakeEngine("Aspiration")
    rec = Planner(engine, prior, PlannerSettings(fusion_weight=0.0)).recommend(MEMORY)
    assert rec.top == "Aspiration" and rec.engine == "fake"
    llm = {a: math.log(0.2) for a in ACTIONS}
    prior_log = prior.log_scores(MEMORY.history)
    fused = fuse(llm, prior_log, 1.0)  # a flat engine leaves the prior's order
    assert max(fused, key=fused.__getitem__) == max(prior_log, key=prior_log.__getitem__)


def test_slow_engine_degrades_to_prior_within_deadline_then_cools_down() -> None:
    prior = packaged_prior()
    engine = FakeEngine(delay_s=5.0)
    now = [0.0]
    planner = Planner(
        engine,
        prior,
        PlannerSettings(deadline_s=0.05, failure_threshold=2, cooldown_s=10),
        clock=lambda: now[0],
    )
    t0 = time.perf_counter()
    rec = planner.recommend(MEMORY)
    assert time.perf_counter() - t0 < 1.0
    assert rec.degraded and "deadline" in (rec.degraded_reason or "") and rec.engine == "prior"
    engine.release.set()  # let the stuck call finish
    planner.recommend(MEMORY)  # second failure (engine still slow? no: released, so it succeeds)
    engine.fail = True
    planner.recommend(MEMORY)
    planner.recommend(MEMORY)
    calls = engine.calls
    rec = planner.recommend(MEMORY)  # in cool-down: the engine is not called at all
    assert rec.degraded and "cooling down" in (rec.degraded_reason or "")
    assert engine.calls == calls
    now[0] = 11.0
    engine.fail = False
    rec = planner.recommend(MEMORY)
    assert not rec.degraded and engine.calls == calls + 1
    planner.close()


def test_failing_engine_degrades_with_reason() -> None:
    planner = Planner(FakeEngine(fail=True), SequencePrior.fit([list(ACTIONS)]))
    rec = planner.recommend(MEMORY)
    assert rec.degraded and "CUDA out of memory" in (rec.degraded_reason or "")
    assert sorted(rec.ranked_labels) == sorted(ACTIONS)
    planner.close()


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(UnknownEngineError, match="'nonsense'"):
        create_engine("nonsense:/x", packaged_prior())


def test_prior_engine_from_a_file_ranks_with_that_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from planner.prior import PriorSettings

    seq = ["Dissection", "Coagulation", "Dissection", "Aspiration", "Dissection", "Coagulation", "Dissection"]
    unigram = SequencePrior.fit([seq], PriorSettings(order=1))
    path = tmp_path / "unigram.json"
    unigram.save(path)
    fallback = packaged_prior()
    planner = Planner(create_engine(f"prior:{path}", fallback), fallback)
    rec = planner.recommend(NHFMemory.from_history([], "Vessel Clipping"))
    # the file's counts, not the packaged prior's
    assert rec.ranked_labels[:2] == ("Dissection", "Coagulation")
    assert "order=1" in rec.model


# ---- the sequence partner (planner.partner) --------------------------------------------------------
def test_a_learned_partner_is_fused_with_the_engine_and_is_the_fallback() -> None:
    from planner.learned import packaged_learned
    from planner.partner import LearnedPartner
    from planner.recommendation import rank_scores
    from planner.sequence_features import Timeline

    prior, learned = packaged_prior(), packaged_learned()
    memory = NHFMemory().start_clip("Tissue Retraction", 0.0).start_clip("Dissection", 40.0)
    learned_log = learned.log_scores(Timeline.from_memory(memory))
    # fused: log p_engine + λ log p_learned, the learned model's scores in place of the n-gram's
    engine = FakeEngine("Aspiration")
    fused_planner = Planner(
        engine, prior, PlannerSettings(fusion_weight=2.0), partner=LearnedPartner(learned)
    )
    fused = fused_planner.recommend(memory)
    engine_log = engine.rank(memory)
    expected = fuse({a: engine_log[a] if a != "Dissection" else -math.inf for a in ACTIONS}, learned_log, 2.0)
    assert not fused.degraded and fused.engine == "fake"
    want = rank_scores(expected, "Dissection")
    assert list(fused.ranked_labels) == [s.action for s in want]
    assert max(abs(a.score - b.score) for a, b in zip(fused.ranked, want, strict=True)) < 1e-9
    with_ngram = Planner(FakeEngine("Aspiration"), prior, PlannerSettings(fusion_weight=2.0)).recommend(
        memory
    )
    assert [s.score for s in fused.ranked] != [s.score for s in with_ngram.ranked]  # the partner mattered
    # degraded: the learned model's own ranking, named as such, its calibrated probabilities kept
    slow = Planner(FakeEngine(delay_s=5.0), prior, PlannerSettings(deadline_s=0.05, temperature=3.0),
                   partner=LearnedPartner(learned))  # fmt: skip
    rec = slow.recommend(memory)
    assert rec.degraded and rec.engine == "learned" and rec.model == learned.description
    alone = Planner(create_engine("learned", prior), prior).recommend(memory)
    assert rec.ranked_labels == alone.ranked_labels
    assert max(abs(a.score - b.score) for a, b in zip(rec.ranked, alone.ranked, strict=True)) < 1e-9
    for p in (fused_planner, slow):
        p.close()


def test_the_partner_setting_reaches_the_planner_and_rejects_unknown_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from planner.config import PlannerConfig
    from planner.factory import build_planner

    prior = packaged_prior()
    engine = FakeEngine()
    assert build_planner(PlannerConfig(), prior, engine).partner.name == "prior"
    assert build_planner(PlannerConfig(partner="learned"), prior, engine).partner.name == "learned"
    with pytest.raises(ValueError, match=r"planner\.partner must be prior, learned or learned:FILE"):
        PlannerConfig(partner="markov")
    from training.cli import main

    assert main(["evaluate", "--annotations", str(tmp_path / "x.json"), "--set", "planner.partner='x'"]) == 2
