"""Distillation: training samples, teachers, verification, the answer cache, and the exports."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from planner.actions import ACTIONS
from planner.prior import SequencePrior
from tests.training_fixtures import reference_context, write_annotations
from training.cholect50 import TEST_VIDEOS, load_annotations
from training.cli import main
from training.distill import ResponseCache, distill, verify
from training.recipes import DistillConfig
from training.samples import SampleError, training_samples
from training.teachers import TeacherContext, TeacherRequest, create_teacher

pytest_plugins = ["tests.qwen_fixtures"]


def _annotations(tmp_path: Path) -> Path:
    return write_annotations(tmp_path / "annotations.json")


def _ctx(data_path: Path, **settings: Any) -> TeacherContext:
    return reference_context(data_path, **settings)


class StubTeacher:
    """A teacher through the contract: answers with a fixed ranking, counting its calls."""

    def __init__(self, ranking: list[str] | None = None, texts: list[str] | None = None) -> None:
        self.spec, self.model, self.calls = "stub", "stub-model", 0
        self.ranking, self.texts = ranking, texts

    def respond(self, request: TeacherRequest) -> str:
        self.calls += 1
        if self.texts is not None:
            return self.texts[request.index % len(self.texts)]
        ranking = self.ranking or [a for a in ACTIONS if a != request.sample.source.target][:3]
        return json.dumps({"progress_assessment": "p", "safety_considerations": "s",
                           "next_actions": [{"action": a, "rationale": "r"} for a in ranking]})  # fmt: skip

    def close(self) -> None:
        pass


def _answer(*ranking: str) -> str:
    return json.dumps({"next_actions": [{"action": a} for a in ranking], "progress_assessment": "p",
                       "safety_considerations": "s"})  # fmt: skip


def test_reference_answers_rank_the_target_first_and_only_training_videos_appear(tmp_path: Path) -> None:
    ctx = _ctx(_annotations(tmp_path))
    samples = training_samples(load_annotations(tmp_path / "annotations.json")).samples
    assert {s.source.video for s in samples} == {"VID01", "VID02"}  # VID06 is a test video
    result = distill(samples, "reference", ctx, ResponseCache(tmp_path / "cache"))
    assert result.summary()["acceptance_rate"] == 100.0 and result.summary()["top1_rate"] == 100.0
    for record in result.records():
        meta = record["meta"]
        assert meta["video"] not in TEST_VIDEOS and meta["verified"] and meta["teacher"] == "reference"
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        answer = json.loads(record["messages"][2]["content"])
        assert answer["next_actions"][0]["action"] == meta["target"]
        assert len({a["action"] for a in answer["next_actions"]}) == 3
        assert "no description available" in record["messages"][1]["content"]  # no captions given


def test_verification_rejects_a_wrong_teacher_and_the_cache_answers_the_rerun(tmp_path: Path) -> None:
    ctx = _ctx(_annotations(tmp_path))
    samples = training_samples(load_annotations(tmp_path / "annotations.json")).samples
    cache = ResponseCache(tmp_path / "cache")
    built: list[StubTeacher] = []

    def factory(spec: str, c: TeacherContext) -> StubTeacher:
        built.append(StubTeacher())
        return built[-1]

    first = distill(samples, "stub", ctx, cache, factory=factory, model="stub-model", ground_truth=False)
    assert first.records() == [] and first.summary()["rejected"] == {"top-1 is not the target": len(samples)}
    assert first.teacher_calls == len(samples) == built[0].calls
    again = distill(samples, "stub", ctx, cache, factory=factory, model="stub-model", ground_truth=False)
    assert again.teacher_calls == 0 and again.cache_hits == len(samples) and len(built) == 1  # never built
    other = distill(samples, "stub", ctx, cache, factory=factory, model="another-model", ground_truth=False)
    assert other.teacher_calls == len(samples)  # the model is part of the key


def test_majority_vote_over_k_answers() -> None:
    d, c, a, v = "Dissection", "Coagulation", "Aspiration", "Vessel Clipping"
    assert verify([_answer(d, c, a), _answer(c, d, a), _answer(d, a, c)], d).accepted
    lost = verify([_answer(c, d, a), _answer(c, a, d), _answer(d, c, a)], d)
    assert not lost.accepted and lost.votes == {c: 2, d: 1} and lost.reason == "top-1 is not the target"
    assert verify([_answer(c, d, a), _answer(c, v, a)], d, accept="top3").index == 0  # lists the target
    tie = verify([_answer(c, d, a), _answer(d, c, a)], d)
    assert not tie.accepted  # a tie goes to the answer seen first
    assert verify(["garbage", "", _answer(d, c, a)], d).accepted  # unparseable answers cast no vote
    assert verify(["garbage"], d).reason == "unparseable"
    assert verify([_answer(d, c)], d).reason == "incomplete (2 valid actions)"


def test_k_answers_are_asked_with_distinct_indices_and_voted(tmp_path: Path) -> None:
    ctx = _ctx(_annotations(tmp_path), samples_per_prompt=3)
    samples = training_samples(load_annotations(tmp_path / "annotations.json")).samples[:2]
    d = samples[0].source.target
    others = [x for x in ACTIONS if x != d]
    stub = StubTeacher(
        texts=[_answer(d, *others[:2]), _answer(others[0], d, others[1]), _answer(d, *others[1:3])]
    )
    result = distill(
        samples,
        "stub",
        ctx,
        ResponseCache(tmp_path / "c"),
        factory=lambda s, c: stub,
        model="m",
        ground_truth=False,
    )
    assert stub.calls == 6 and ctx.settings.sampling_temperature == 0.7
    assert result.outcomes[0].verdict.accepted and result.outcomes[0].verdict.votes == {d: 2, others[0]: 1}


class _WrongServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that always ranks Aspiration, Coagulation, Vessel Clipping."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        text = "Next Actions:\n1. Aspiration - clear the field\n2. Coagulation\n3. Vessel Clipping"
        data = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def wrong_server() -> Iterator[str]:
    _WrongServer.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _WrongServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_teacher_through_a_server_is_verified_and_cached(tmp_path: Path, wrong_server: str) -> None:
    annotations = _annotations(tmp_path)
    out, cache = tmp_path / "data.jsonl", tmp_path / "cache"
    argv = ["distill", "--annotations", str(annotations), "--teacher", f"openai:{wrong_server}",
            "--model", "gpt-test", "--out", str(out), "--cache", str(cache), "--accept", "top3"]  # fmt: skip
    assert main(argv) == 0
    calls = _WrongServer.calls
    n = len(calls)
    assert n == 7 and calls[0]["model"] == "gpt-test" and calls[0]["messages"][0]["role"] == "system"
    report = json.loads((tmp_path / "data.report.json").read_text())
    wanted = {"Aspiration", "Coagulation", "Vessel Clipping"}
    accepted = sum(
        1 for s in training_samples(load_annotations(annotations)).samples if s.source.target in wanted
    )
    assert report["accepted"] == accepted < report["prompts"] == 7  # top3: only targets it happens to list
    assert report["rejected"] == {"target not in the top three": 7 - accepted}
    assert main([*argv[:-2], "--accept", "top1", "--offline"]) == 0  # every answer is cached
    assert len(_WrongServer.calls) == n  # offline: the server was not asked again
    report = json.loads((tmp_path / "data.report.json").read_text())
    aspiration = sum(
        1 for s in training_samples(load_annotations(annotations)).samples if s.source.target == "Aspiration"
    )
    assert report["accepted"] == aspiration == 1  # only where its fixed top-1 happens to be the target


def test_offline_with_an_empty_cache_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["distill", "--annotations", str(_annotations(tmp_path)), "--out", str(tmp_path / "d.jsonl"),
            "--cache", str(tmp_path / "empty"), "--offline"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--offline: 7 of 7 teacher answers are not in the cache" in err[0]
    assert not (tmp_path / "d.jsonl").exists()


def test_cli_writes_chats_report_and_a_valid_llamafactory_export(tmp_path: Path) -> None:
    annotations, out, lf = _annotations(tmp_path), tmp_path / "d.jsonl", tmp_path / "lf"
    (lf / "dataset_info.json").parent.mkdir()
    (lf / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "other.json"}}))
    assert main(["distill", "--annotations", str(annotations), "--out", str(out), "--sharegpt", str(lf)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7 and {r["meta"]["video"] for r in records} == {"VID01", "VID02"}
    info = json.loads((lf / "dataset_info.json").read_text())
    assert set(info) == {"other", "llm_sap_sft"}  # other datasets are kept
    entry = info["llm_sap_sft"]
    assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages"}
    assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"}  # fmt: skip
    rows = json.loads((lf / entry["file_name"]).read_text())
    assert len(rows) == 7 and all(isinstance(m["content"], str) for r in rows for m in r["messages"])
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["messages"][2]["content"] == records[0]["messages"][2]["content"]


def test_direct_variant_reads_frames_and_skips_samples_without_them(tmp_path: Path) -> None:
    data = load_annotations(_annotations(tmp_path))
    root = tmp_path / "frames"
    kept = data.split("train")[0]
    for frame in kept.near_frames:
        (root / frame).parent.mkdir(parents=True, exist_ok=True)
        (root / frame).write_bytes(b"\x89PNG fake")
    result = training_samples(data, "direct", frame_root=root)
    assert [s.key for s in result.samples] == [kept.key] and len(result.skipped) == 6
    assert "2 of 2 near frames missing under" in result.skipped[0][2]
    parts = result.samples[0].messages[1]["content"]
    assert [p["image"] for p in parts if p["type"] == "image"] == [str(root / f) for f in kept.near_frames]
    with pytest.raises(SampleError, match="no training sample could be built"):
        training_samples(data, "direct", frame_root=tmp_path / "nowhere")


def test_captions_reach_the_indirect_prompt(tmp_path: Path) -> None:
    data = load_annotations(_annotations(tmp_path))
    captions = {("VID01", "2"): "The hook dissects the cystic duct."}
    first = training_samples(data, captions=captions).samples[0]
    assert "The hook dissects the cystic duct." in first.messages[1]["content"]
    assert first.meta()["caption"] == "The hook dissects the cystic duct."


@pytest.mark.data
def test_reference_teacher_on_the_real_training_videos(annotations_path: Path, tmp_path: Path) -> None:
    data = load_annotations(annotations_path)
    samples = training_samples(data).samples
    assert len(samples) == 168 and not {s.source.video for s in samples} & set(TEST_VIDEOS)
    prior = SequencePrior.fit(data.sequences(data.train_videos), trained_on=data.train_videos)
    ctx = TeacherContext(prior=prior, settings=DistillConfig())
    result = distill(samples, "reference", ctx, ResponseCache(tmp_path / "cache"))
    summary = result.summary()
    assert summary["acceptance_rate"] == 100.0 and summary["top1_rate"] == 100.0
    assert set(summary["videos"]) <= set(data.train_videos)
    teacher = create_teacher("reference", ctx)
    request = TeacherRequest(samples[0], 0.0, 512)
    assert teacher.respond(request) == teacher.respond(request)  # deterministic


def test_a_local_transformers_teacher_answers_samples_and_greedy_is_repeatable(
    tiny_qwen: Any, tmp_path: Path
) -> None:
    annotations = _annotations(tmp_path)
    samples = training_samples(load_annotations(annotations)).samples[:1]
    spec = f"transformers:{tiny_qwen.text}"
    ctx = _ctx(annotations, max_tokens=16)
    teacher = create_teacher(spec, ctx)
    request = TeacherRequest(samples[0], 0.0, 16)
    text = teacher.respond(request)
    assert isinstance(text, str) and text == teacher.respond(request)  # greedy
    sampled = TeacherRequest(samples[0], 1.0, 16, index=3)
    assert teacher.respond(sampled) == teacher.respond(sampled)  # seeded by the answer index
    k2 = _ctx(annotations, max_tokens=16, samples_per_prompt=2)
    result = distill(samples, spec, k2, ResponseCache(tmp_path / "cache"))
    assert result.teacher_calls == 2 and len(result.outcomes) == 1  # a random model: verdicts vary
    assert result.model == str(tiny_qwen.text.resolve())
