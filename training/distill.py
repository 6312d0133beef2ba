"""Distillation: a teacher answers each training sample; answers are verified, cached, written as chats.

- Verification (pure): the k answers of a prompt are parsed with ``planner.response.parse_response``;
  the majority of the parsed top-1s wins (ties: the one seen first), and the first answer with that
  top-1 is kept when it is complete (three distinct valid actions) and, with ``accept="top1"``,
  its top-1 is the target, or with ``accept="top3"``, the target is among its three.
- Cache: every answer is stored under the sha256 of (teacher spec, model, prompt messages with
  image file digests, temperature, max tokens, answer index), one JSON file each, written
  atomically. A rerun asks the teacher nothing; ``offline`` refuses to ask it at all.
- Output: chat JSONL, one line per accepted sample: ``{"messages": [system, user, assistant],
  "meta": {video, clip, target, next_action, distant, nearest, variant, teacher, model, hash,
  verified, votes, k}}``; the assistant turn is the kept answer in the canonical JSON shape.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from planner.atomic import atomic_write_json, atomic_write_text
from planner.response import StructuredResponse, parse_response
from training.exceptions import TrainingError
from training.samples import TrainingSample
from training.teachers import (
    Teacher,
    TeacherContext,
    TeacherRequest,
    create_teacher,
    describe_teacher,
    sees_ground_truth,
)

log = structlog.get_logger(__name__)

Accept = Literal["top1", "top3"]


class DistillError(TrainingError):
    """Distillation cannot run as asked (offline with a cache miss, nothing accepted, ...)."""


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # "accepted", or why not
    response: StructuredResponse | None  # the kept answer (None when nothing parsed)
    index: int | None  # which of the k answers was kept
    votes: dict[str, int]
    parsed: int  # answers that parsed


def verify(texts: Sequence[str], target: str, accept: Accept = "top1") -> Verdict:
    """Majority vote over the parsed top-1s of k answers, then check the kept answer against ``target``."""
    parsed = [
        (i, r) for i, r in enumerate(parse_response(t) for t in texts) if isinstance(r, StructuredResponse)
    ]
    if not parsed:
        return Verdict(False, "unparseable", None, None, {}, 0)
    votes = Counter(r.ranked_labels[0] for _, r in parsed)
    order = {a: n for n, a in reversed(list(enumerate(r.ranked_labels[0] for _, r in parsed)))}
    winner = max(votes, key=lambda a: (votes[a], -order[a]))
    candidates = [(i, r) for i, r in parsed if r.ranked_labels[0] == winner]
    if accept == "top3":  # prefer an answer with the winning top-1 that lists the target
        candidates.sort(key=lambda ir: target not in ir[1].ranked_labels)
    index, response = candidates[0]
    if not response.complete:
        reason = f"incomplete ({len(response.actions)} valid actions)"
    elif accept == "top1" and winner != target:
        reason = "top-1 is not the target"
    elif accept == "top3" and target not in response.ranked_labels:
        reason = "target not in the top three"
    else:
        reason = "accepted"
    return Verdict(reason == "accepted", reason, response, index, dict(votes), len(parsed))


# ------------------------------------------------------------------------------------------ cache


def _digest_images(messages: Sequence[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image" and Path(str(part["image"])).is_file():
                    data = Path(str(part["image"])).read_bytes()
                    part = {**part, "sha256": hashlib.sha256(data).hexdigest()}
                parts.append(part)
            content = parts
        out.append({"role": m["role"], "content": content})
    return out


def request_key(spec: str, model: str, request: TeacherRequest, *, ground_truth: bool) -> str:
    """sha256 of the teacher spec + model + prompt messages + sampling settings (+ answer index).

    A teacher that reads the ground truth (``reference``: ``ground_truth``) also keys on the
    sample's target.
    """
    payload: dict[str, Any] = {
        "teacher": spec,
        "model": model,
        "messages": _digest_images(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "index": request.index,
    }
    if ground_truth:
        payload["target"] = request.sample.source.target
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    """One JSON file per answer: ``DIR/ab/abcdef....json`` holding the text and its provenance."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            text = json.loads(self.path(key).read_text(encoding="utf-8"))["text"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None
        return text if isinstance(text, str) else None

    def put(self, key: str, text: str, **info: Any) -> None:
        atomic_write_json(self.path(key), {"text": text, **info, "time": time.time()})


# -------------------------------------------------------------------------------------------- run


@dataclass
class Outcome:
    sample: TrainingSample
    verdict: Verdict
    keys: list[str]


@dataclass
class DistillResult:
    spec: str
    model: str
    accept: Accept
    k: int
    outcomes: list[Outcome] = field(default_factory=list)
    teacher_calls: int = 0
    cache_hits: int = 0

    def records(self) -> list[dict[str, Any]]:
        """The chat JSONL records of the accepted samples."""
        out = []
        for o in self.outcomes:
            v = o.verdict
            if not v.accepted or v.response is None or v.index is None:
                continue
            meta = {
                **o.sample.meta(),
                "teacher": self.spec,
                "model": self.model,
                "hash": o.keys[v.index],
                "verified": True,
                "accept": self.accept,
                "votes": v.votes,
                "k": self.k,
            }
            assistant = {"role": "assistant", "content": v.response.to_json()}
            out.append({"messages": [*o.sample.messages, assistant], "meta": meta})
        return out

    def summary(self) -> dict[str, Any]:
        n = len(self.outcomes)
        kept = [
            (o.verdict.response.ranked_labels, o.sample.source.target)
            for o in self.outcomes
            if o.verdict.response
        ]
        top1 = sum(1 for ranked, target in kept if ranked[0] == target)
        top3 = sum(1 for ranked, target in kept if target in ranked)
        answers = n * self.k
        parsed = sum(o.verdict.parsed for o in self.outcomes)
        accepted = sum(o.verdict.accepted for o in self.outcomes)
        reasons = Counter(o.verdict.reason for o in self.outcomes if not o.verdict.accepted)

        def pct(x: int, d: int) -> float:
            return round(100.0 * x / d, 2) if d else 0.0

        return {
            "teacher": self.spec,
            "model": self.model,
            "accept": self.accept,
            "k": self.k,
            "prompts": n,
            "answers": answers,
            "teacher_calls": self.teacher_calls,
            "cache_hits": self.cache_hits,
            "parseable_answers": parsed,
            "parse_rate": pct(parsed, answers),
            "top1_rate": pct(top1, n),
            "top3_rate": pct(top3, n),
            "accepted": accepted,
            "acceptance_rate": pct(accepted, n),
            "rejected": dict(reasons),
            "videos": sorted({o.sample.source.video for o in self.outcomes}),
        }


TeacherFactory = Callable[[str, TeacherContext], Teacher]


def distill(
    samples: Sequence[TrainingSample],
    spec: str,
    ctx: TeacherContext,
    cache: ResponseCache,
    *,
    offline: bool = False,
    factory: TeacherFactory = create_teacher,
    model: str | None = None,
    ground_truth: bool | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DistillResult:
    """Answer, cache and verify every sample; the teacher is built only at the first cache miss.

    ``factory`` builds the teacher (tests inject stubs; then ``model`` names it and
    ``ground_truth`` says whether it reads the target; both default to the registered teacher's).
    """
    cfg = ctx.settings
    model = model if model is not None else describe_teacher(spec, ctx)
    ground_truth = sees_ground_truth(spec) if ground_truth is None else ground_truth
    result = DistillResult(spec, model, cfg.accept, cfg.samples_per_prompt)
    plan = []
    for sample in samples:
        requests = [
            TeacherRequest(sample, cfg.sampling_temperature, cfg.max_tokens, index=i)
            for i in range(cfg.samples_per_prompt)
        ]
        plan.append(
            (sample, requests, [request_key(spec, model, r, ground_truth=ground_truth) for r in requests])
        )
    missing = sum(1 for _, _, keys in plan for k in keys if cache.get(k) is None)
    if offline and missing:
        raise DistillError(
            f"--offline: {missing} of {len(plan) * cfg.samples_per_prompt} teacher answers are not in the "
            f"cache {cache.folder} (teacher {spec}, model {model}); run once without --offline"
        )
    teacher: Teacher | None = None
    try:
        for done, (sample, requests, keys) in enumerate(plan, 1):
            texts = []
            for request, key in zip(requests, keys, strict=True):
                text = cache.get(key)
                if text is None:
                    teacher = teacher or factory(spec, ctx)
                    text = teacher.respond(request)
                    result.teacher_calls += 1
                    where = {"video": sample.source.video, "clip": sample.source.clip}
                    cache.put(key, text, teacher=spec, model=model, **where)
                else:
                    result.cache_hits += 1
                texts.append(text)
            result.outcomes.append(Outcome(sample, verify(texts, sample.source.target, cfg.accept), keys))
            if on_progress:
                on_progress(done)
    finally:
        if teacher is not None:
            teacher.close()
    log.info("distill.done", **{k: v for k, v in result.summary().items() if k not in ("videos", "rejected")})
    return result


def write_chats(path: Path, records: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_chats(path: Path) -> list[dict[str, Any]]:
    """Read a chat JSONL written by ``write_chats``; problems name the line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise DistillError(f"{path}: cannot read the chat JSONL ({type(exc).__name__})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DistillError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        messages = row.get("messages") if isinstance(row, dict) else None
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)
        ):
            raise DistillError(
                f"{path}:{n}: expected {{'messages': [{{'role', 'content'}}, ...], 'meta': ...}}"
            )
        out.append(row)
    if not out:
        raise DistillError(f"{path}: no chat in the file")
    return out
