"""The planner: NHFM memory → engine scores fused with the prior → a Recommendation.

A model engine runs in a worker thread (``EngineWorker``, shared by every room's Planner
when one is given) under a deadline. When it misses the deadline or
fails, the recommendation is the prior's ranking, flagged ``degraded`` with the reason; after
``failure_threshold`` failures in a row the engine is skipped for ``cooldown_s`` seconds
instead of timing out on every clip.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

import structlog

from planner.actions import ACTIONS
from planner.calibration import apply_temperature
from planner.engine_worker import EngineWorker
from planner.engines.base import PlanningEngine
from planner.exceptions import LearnedModelError
from planner.learned import LearnedModel, packaged_learned
from planner.memory import NHFMemory
from planner.partner import NgramPartner, SequencePartner
from planner.prior import SequencePrior
from planner.recommendation import Recommendation, ScoredAction, rank_scores
from planner.response import StructuredResponse, parse_response
from planner.sequence_features import Timeline

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlannerSettings:
    fusion_weight: float = 1.0  # λ in log p_llm + λ log p_prior
    deadline_s: float = 2.0
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    max_response_tokens: int = 256
    text_deadline_s: float = 10.0  # the rationale text, live: later than this after the ranking is dropped
    #: calibration: probabilities are p^(1/T) renormalised before anyone sees them (fit it with
    #: ``llm-sap evaluate``, which reports the CV temperature); engines that declare ``calibrated``
    #: (the learned planner) carry their own and get none added
    temperature: float = 1.0

    def __post_init__(self) -> None:
        """Every value finite and in its range (fusion weight in [0, 100]; deadlines in (0, 600] s;
        cooldown in [0, 3600] s; the failure threshold in 1..1000; the token cap in 1..32768)."""
        if not (math.isfinite(self.fusion_weight) and 0 <= self.fusion_weight <= 100):
            raise ValueError(f"fusion_weight must be a finite number in [0, 100], got {self.fusion_weight}")
        for name in ("deadline_s", "text_deadline_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 600):
                raise ValueError(f"{name} must be a finite number of seconds in (0, 600], got {value}")
        if not (math.isfinite(self.cooldown_s) and 0 <= self.cooldown_s <= 3600):
            raise ValueError(
                f"cooldown_s must be a finite number of seconds in [0, 3600], got {self.cooldown_s}"
            )
        if not 1 <= self.failure_threshold <= 1000:
            raise ValueError(f"failure_threshold must be in 1..1000, got {self.failure_threshold}")
        if not 1 <= self.max_response_tokens <= 32768:
            raise ValueError(f"max_response_tokens must be in 1..32768, got {self.max_response_tokens}")
        if not (math.isfinite(self.temperature) and 0.05 <= self.temperature <= 20):
            raise ValueError(f"temperature must be a finite number in [0.05, 20], got {self.temperature}")


def fuse(llm_log: Mapping[str, float], prior_log: Mapping[str, float], weight: float) -> dict[str, float]:
    """Probabilities from log p_llm + λ log p_prior, normalised over the actions with finite score."""
    combined = {a: llm_log[a] + weight * prior_log[a] if weight else llm_log[a] for a in ACTIONS}
    return softmax(combined)


def softmax(log_scores: Mapping[str, float]) -> dict[str, float]:
    finite = [v for v in log_scores.values() if math.isfinite(v)]
    if not finite:
        return {a: 1.0 / len(ACTIONS) for a in ACTIONS}
    top = max(finite)
    exp = {a: (math.exp(v - top) if math.isfinite(v) else 0.0) for a, v in log_scores.items()}
    total = sum(exp.values())
    return {a: e / total for a, e in exp.items()}


class Planner:
    """Turns a memory snapshot into a Recommendation. Thread-safe for one caller at a time.

    ``worker``: a shared ``EngineWorker`` over ``engine`` (one model for every room); the Planner
    then leaves the engine and the worker open on ``close`` (their owner closes them). Without
    one, a model engine gets a worker of its own and the Planner closes both. ``shared``: the
    engine belongs to someone else even without a worker (an instant engine shared by rooms)."""

    def __init__(
        self,
        engine: PlanningEngine,
        prior: SequencePrior,
        settings: PlannerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        worker: EngineWorker | None = None,
        sequence_model: LearnedModel | None = None,
        partner: SequencePartner | None = None,
        shared: bool = False,
    ) -> None:
        self.engine = engine
        self.prior = prior
        # fused with a model engine's scores, and the ranking of a degraded recommendation
        self.partner: SequencePartner = partner or NgramPartner(prior)
        self.settings = settings or PlannerSettings()
        # the time-to-next estimate and the second step of "next or the one after": the engine's own
        # learned model, else the given one, else the packaged one
        self.sequence_model = getattr(engine, "learned", None) or sequence_model or _packaged_sequence_model()
        self._clock = clock
        self._inline = bool(getattr(engine, "instant", False))  # declared: no thread, no deadline
        if worker is not None and worker.engine is not engine:
            raise ValueError("the shared worker runs another engine")
        # a shared engine (one per process, every room's Planner over it) is closed by its owner
        self._owns_engine = worker is None and not shared
        self._worker = None if self._inline else (worker or EngineWorker(engine))
        self._failures = 0
        self._skip_until = 0.0

    @property
    def instant(self) -> bool:
        """True when the engine declares ranking cheap enough to run inline: no thread hop."""
        return self._inline

    @property
    def reads_near(self) -> frozenset[str]:
        """What the engine's ranking reads of the near clip besides its label (declared by the
        engine: "keyframes", "caption"; none declared: labels only); the live pipeline re-plans a
        clip only when these change."""
        return frozenset(getattr(self.engine, "reads_near", ()))

    def recommend(self, memory: NHFMemory) -> Recommendation:
        t0 = time.perf_counter()
        if self._inline:  # the prior engine may hold its own prior (prior:FILE): rank with it
            return self._build(memory, softmax(self.engine.rank(memory)), t0)
        prior_log = self.partner.log_scores(memory)
        degraded_reason = self._unavailable_reason()
        llm_log: dict[str, float] | None = None
        if degraded_reason is None:
            llm_log, degraded_reason = self._rank_with_deadline(memory)
        return self._finish(memory, prior_log, llm_log, degraded_reason, t0)

    async def recommend_async(self, memory: NHFMemory) -> Recommendation:
        """``recommend`` for an event loop, with one thread hop: an instant engine ranks inline (no
        hop); a model engine's request goes straight to the engine worker's thread and the loop
        awaits it under the same deadline. The prior, the fusion and the fallback (pure, cheap) run
        on the calling loop; failures, cool-down and degraded results as in ``recommend``."""
        if self._inline:
            return self.recommend(memory)
        assert self._worker is not None
        t0 = time.perf_counter()
        prior_log = self.partner.log_scores(memory)
        degraded_reason = self._unavailable_reason()
        llm_log: dict[str, float] | None = None
        if degraded_reason is None:
            future = self._worker.submit(memory)
            try:
                scores = await asyncio.wait_for(asyncio.wrap_future(future), self.settings.deadline_s)
            except TimeoutError:
                future.cancel()
                llm_log, degraded_reason = None, self._missed_deadline()
            except asyncio.CancelledError:
                future.cancel()  # never scored once its caller is gone
                raise
            except Exception as exc:
                llm_log, degraded_reason = None, self._engine_failed(exc)
            else:
                llm_log, degraded_reason = self._accept(scores)
        return self._finish(memory, prior_log, llm_log, degraded_reason, t0)

    def explain(self, memory: NHFMemory, recommendation: Recommendation) -> Recommendation:
        """Generate, parse and attach the structured response (the slow, optional part)."""
        t0 = time.perf_counter()
        text = "".join(self.engine.generate(memory, self.settings.max_response_tokens))
        parsed = parse_response(text)
        timings = {**recommendation.timings_ms, "generate": (time.perf_counter() - t0) * 1000}
        response = parsed if isinstance(parsed, StructuredResponse) else None
        return replace(recommendation, response=response, timings_ms=timings)

    def explain_within(
        self, memory: NHFMemory, recommendation: Recommendation, deadline_s: float | None = None
    ) -> Recommendation | None:
        """``explain`` under a deadline (default ``settings.text_deadline_s``): generation stops at
        the first chunk past it and nothing is returned (``None``: the text was late)."""
        limit = self.settings.text_deadline_s if deadline_s is None else deadline_s
        t0 = time.perf_counter()
        chunks: list[str] = []
        stream = self.engine.generate(memory, self.settings.max_response_tokens)
        try:
            for chunk in stream:
                if time.perf_counter() - t0 > limit:
                    log.info("planner.text_late", engine=self.engine.name, deadline_s=limit)
                    return None
                chunks.append(chunk)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:  # stop a generator mid-way: it releases the model at once
                close()
        if time.perf_counter() - t0 > limit:
            return None
        parsed = parse_response("".join(chunks))
        timings = {**recommendation.timings_ms, "generate": (time.perf_counter() - t0) * 1000}
        response = parsed if isinstance(parsed, StructuredResponse) else None
        return replace(recommendation, response=response, timings_ms=timings)

    def close(self) -> None:
        if not self._owns_engine:
            return
        if self._worker is not None:
            self._worker.close()
        self.engine.close()

    # ---- internals ---------------------------------------------------------------------------
    def _unavailable_reason(self) -> str | None:
        if self._clock() < self._skip_until:
            return f"engine cooling down after {self._failures} failures"
        return None

    def _rank_with_deadline(self, memory: NHFMemory) -> tuple[dict[str, float] | None, str | None]:
        assert self._worker is not None
        future: Future[dict[str, float]] = self._worker.submit(memory)
        try:
            scores = future.result(timeout=self.settings.deadline_s)
        except FutureTimeout:
            future.cancel()
            return None, self._missed_deadline()
        except Exception as exc:
            return None, self._engine_failed(exc)
        return self._accept(scores)

    def _finish(
        self,
        memory: NHFMemory,
        prior_log: Mapping[str, float],
        llm_log: Mapping[str, float] | None,
        degraded_reason: str | None,
        t0: float,
    ) -> Recommendation:
        """The engine's scores fused with the prior, or the prior alone (degraded) without them."""
        if llm_log is None:
            return self._build(memory, softmax(prior_log), t0, degraded_reason or "engine failed")
        probs = fuse(_exclude(llm_log, memory.current_action), prior_log, self.settings.fusion_weight)
        return self._build(memory, probs, t0)

    def _missed_deadline(self) -> str:
        return self._record_failure(f"engine missed its {self.settings.deadline_s:g} s deadline")

    def _engine_failed(self, exc: BaseException) -> str:
        """Any engine failure degrades to the prior, with its traceback logged."""
        log.warning("planner.engine_failed", engine=self.engine.name, exc_info=exc)
        return self._record_failure(f"engine failed: {type(exc).__name__}: {exc}")

    def _accept(self, scores: dict[str, float]) -> tuple[dict[str, float] | None, str | None]:
        if set(scores) != set(ACTIONS):
            return None, self._record_failure("engine returned scores for the wrong actions")
        self._failures = 0
        return scores, None

    def _record_failure(self, reason: str) -> str:
        self._failures += 1
        if self._failures >= self.settings.failure_threshold:
            self._skip_until = self._clock() + self.settings.cooldown_s
        log.warning("planner.degraded", engine=self.engine.name, reason=reason, failures=self._failures)
        return reason

    def _build(
        self, memory: NHFMemory, probs: Mapping[str, float], t0: float, degraded_reason: str | None = None
    ) -> Recommendation:
        current = memory.current_action
        probs = _renormalise_without(probs, current)
        ranker: PlanningEngine | SequencePartner = self.engine if degraded_reason is None else self.partner
        if self.settings.temperature != 1.0 and not getattr(ranker, "calibrated", False):
            probs = apply_temperature(probs, self.settings.temperature)
        extras = self._sequence_extras(memory, probs)
        return Recommendation(
            ranked=rank_scores(probs, current),
            current_action=current,
            history=memory.history,
            engine=ranker.name,
            model=ranker.model,
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
            timings_ms={"rank": (time.perf_counter() - t0) * 1000},
            **extras,
        )

    def _sequence_extras(self, memory: NHFMemory, probs: Mapping[str, float]) -> dict[str, Any]:
        model = self.sequence_model
        if model is None:
            return {}
        timeline = Timeline.from_memory(memory)
        two = model.two_step(timeline, first=probs)
        either = {a: p / 2 for a, p in two.either.items()}
        ranked = tuple(ScoredAction(a, round(p, 6)) for a, p in sorted(
            either.items(), key=lambda kv: (-kv[1], ACTIONS.index(kv[0]))))  # fmt: skip
        return {"next_or_after": ranked, "best_pair": two.best_pair, "time_to_next": model.time_to_next}


def _packaged_sequence_model() -> LearnedModel | None:
    try:
        return packaged_learned()
    except (LearnedModelError, FileNotFoundError) as exc:  # the planner still ranks without it
        log.warning("planner.no_sequence_model", error=str(exc))
        return None


def _exclude(log_scores: Mapping[str, float], current: str | None) -> dict[str, float]:
    return {a: (-math.inf if a == current else v) for a, v in log_scores.items()}


def _renormalise_without(probs: Mapping[str, float], current: str | None) -> dict[str, float]:
    kept = {a: (0.0 if a == current else p) for a, p in probs.items()}
    total = sum(kept.values())
    return {a: p / total for a, p in kept.items()} if total > 0 else dict(kept)
