"""The learned sequence planner: features, model file, calibration, time to next, engine, payload."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from planner.actions import ACTIONS
from planner.calibration import apply_temperature, calibration_report, fit_temperature, nll
from planner.engines import create_engine
from planner.exceptions import LearnedModelError
from planner.learned import FORMAT_VERSION, LearnedModel, packaged_learned
from planner.memory import NHFMemory
from planner.planner import Planner
from planner.prior import packaged_prior
from planner.sequence_features import FEATURE_NAMES, Timeline, features
from planner.time_to_next import DurationModel
from training.cli import main

SHIPPED = Path(__file__).resolve().parents[1] / "planner" / "data" / "learned.json"


# ---- features ------------------------------------------------------------------------------------------
def test_features_are_named_and_times_unknown_without_starts() -> None:
    tl = Timeline(("Dissection", "Vessel Clipping", "Coagulation"), (100.0, 160.0, 190.0))
    x = dict(zip(FEATURE_NAMES, features(tl), strict=True))
    assert x["cur=Coagulation"] == 1 and x["prev=Vessel Clipping"] == 1 and x["prev2=Dissection"] == 1
    assert x["pair=Vessel Clipping>Coagulation"] == 1
    assert x["elapsed_procedure_s"] == pytest.approx(math.log1p(90))
    assert x["prev_duration_s"] == pytest.approx(math.log1p(30))
    assert x["since_clipping_s"] == pytest.approx(math.log1p(30))
    no_times = dict(zip(FEATURE_NAMES, features(Timeline(tl.labels)), strict=True))
    assert math.isnan(no_times["elapsed_procedure_s"]) and no_times["cur=Coagulation"] == 1


def test_repeated_labels_count_as_one_clip() -> None:
    once = features(Timeline(("Dissection", "Coagulation"), (0.0, 40.0)))
    twice = features(Timeline(("Dissection", "Dissection", "Coagulation"), (0.0, 20.0, 40.0)))
    assert once == twice


def test_memory_carries_start_times_into_the_timeline() -> None:
    memory = NHFMemory().start_clip("Dissection", 10.0).start_clip("Coagulation", 55.0)
    memory = memory.start_clip("Dissection", 80.0)
    tl = Timeline.from_memory(memory)
    assert tl.labels == ("Dissection", "Coagulation", "Dissection")
    assert tl.starts == (10.0, 55.0, 80.0)
    sample = NHFMemory.from_history(["Dissection"], "Coagulation", starts=[10.0, 55.0])
    assert Timeline.from_memory(sample).starts == (10.0, 55.0)


# ---- calibration -----------------------------------------------------------------------------------------
def test_temperature_softens_overconfidence_and_keeps_the_order() -> None:
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.integers(0, 5, n)
    # over-confident: 90% on a guess that is right 50% of the time
    guess = np.where(rng.random(n) < 0.5, truth, (truth + 1) % 5)
    probs = np.full((n, 5), 0.025)
    probs[np.arange(n), guess] = 0.9
    t = fit_temperature(probs, truth)
    assert t > 1.5
    assert nll(probs, truth, t) < nll(probs, truth, 1.0)
    p = apply_temperature(dict(zip(ACTIONS, probs[0], strict=True)), t)
    assert max(p, key=p.__getitem__) == ACTIONS[guess[0]] and sum(p.values()) == pytest.approx(1.0)
    before = calibration_report(probs.max(axis=1), guess == truth)
    assert before.ece == pytest.approx(0.4, abs=0.05)


def test_calibration_lowers_ece_on_held_out_folds() -> None:
    """T fitted on one half of an over-confident model's outputs lowers ECE and Brier on the other."""
    rng = np.random.default_rng(1)
    n = 1200
    logits = rng.normal(size=(n, 5)) * 1.0
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in true_p])
    sharp = np.exp(3 * logits)
    sharp /= sharp.sum(axis=1, keepdims=True)  # the model is 3x too confident
    fit, held = slice(0, n // 2), slice(n // 2, n)
    t = fit_temperature(sharp[fit], y[fit])
    assert t == pytest.approx(3.0, rel=0.2)
    scaled = np.exp(np.log(sharp[held]) / t)
    scaled /= scaled.sum(axis=1, keepdims=True)
    raw = calibration_report(sharp[held].max(axis=1), sharp[held].argmax(axis=1) == y[held])
    cal = calibration_report(scaled.max(axis=1), scaled.argmax(axis=1) == y[held])
    assert cal.ece < raw.ece / 2 and cal.brier < raw.brier


# ---- time to next --------------------------------------------------------------------------------------
def test_remaining_time_range_shrinks_to_the_survivors() -> None:
    durations = [("Dissection", float(d)) for d in (20, 30, 40, 50, 60, 80, 100, 200, 400, 600)]
    model = DurationModel.fit(durations, min_samples=3)
    at_start = model.remaining("Dissection", 0)
    assert at_start.low_s <= at_start.expected_s <= at_start.high_s
    assert at_start.expected_s == pytest.approx(70.0)
    later = model.remaining("Dissection", 150)  # only the 200, 400, 600 s clips lasted that long
    assert later.low_s == pytest.approx(150) and later.high_s == pytest.approx(350)
    assert model.baseline("Dissection", 150) == 0.0
    beyond = model.remaining("Dissection", 1000)  # longer than any: "any moment now"
    assert beyond.low_s == 0.0


# ---- the model file ------------------------------------------------------------------------------------
def test_shipped_model_loads_and_ranks_fast() -> None:
    model = packaged_learned()
    engine = create_engine("learned", packaged_prior())
    memory = NHFMemory.from_history(["Dissection", "Coagulation"], "Vessel Clipping", starts=[0, 60, 90])
    scores = engine.rank(memory)
    assert math.isinf(scores["Vessel Clipping"]) and sum(
        math.exp(v) for v in scores.values()
    ) == pytest.approx(1)
    planner = Planner(engine, packaged_prior())
    times = []
    for _ in range(60):
        t0 = time.perf_counter()
        rec = planner.recommend(memory)
        times.append((time.perf_counter() - t0) * 1000)
    per_ms = sorted(times)[len(times) // 2]  # the median: robust to other processes on a shared CPU
    assert per_ms < 5.0, f"{per_ms:.2f} ms per recommendation (ranking + two-step + time model)"
    assert len(rec.next_or_after) == 5 and rec.best_pair is not None and rec.time_to_next is not None
    assert sum(s.score for s in rec.next_or_after) == pytest.approx(1.0, abs=1e-4)
    assert model.temperature > 0 and model.trained_on


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=FORMAT_VERSION + 1), "format version"),
        (lambda d: d.pop("forest" if "forest" in d else "coef"), "missing field"),
        (lambda d: d.pop("time_to_next"), "missing field"),
        (lambda d: d.update(features=d["features"][:-1]), "features"),
        (lambda d: d.update(temperature=-1), "temperature"),
        (lambda d: d.update(format="something-else"), "not an llm-sap learned planner"),
        (lambda d: d.update(family="gboost"), "family"),
        (lambda d: d.update(version="1"), "format version"),
    ],
)
def test_a_bad_model_file_is_a_named_error_and_exit_2(
    tmp_path: Path, mutate: object, message: str, annotations_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(SHIPPED.read_text())
    mutate(data)  # type: ignore[operator]
    path = _write(tmp_path, data)
    with pytest.raises(LearnedModelError, match=message):
        LearnedModel.load(path)
    code = main(["evaluate", "--annotations", str(annotations_path), "--planner", f"learned:{path}"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_refit_from_the_data_matches_the_shipped_file(annotations_path: Path) -> None:
    """``llm-sap fit-learned`` wrote the shipped file; a fresh fit of the same family on the same
    videos gives the same model (the CV figures, stored beside it, are not recomputed here)."""
    pytest.importorskip("sklearn", reason="fitting needs the 'fit' extra (scikit-learn)")
    from training.cholect50 import load_annotations
    from training.sequence_selection import LEARNED_FAMILIES, fit_final

    shipped = json.loads(SHIPPED.read_text())
    family = {v: k for k, v in LEARNED_FAMILIES.items()}[shipped["family"]]
    data = load_annotations(annotations_path)
    q = (shipped["time_to_next"]["low_q"], shipped["time_to_next"]["high_q"])
    refit = json.loads(json.dumps(fit_final(data, data.train_videos, q, family=family).to_dict()))
    for key in ("cv", "settings"):
        shipped.pop(key)
        refit.pop(key)
    assert refit == shipped
    assert packaged_learned().settings["rows"] == 288
    assert packaged_learned().family == shipped["family"]


# ---- payload -------------------------------------------------------------------------------------------
def test_payload_carries_next_in_and_the_two_step_ranking_and_validates() -> None:
    pytest.importorskip("jsonschema")
    from streamer.events import ClipStarted
    from streamer.payloads import PayloadFactory, validate_payload

    planner = Planner(create_engine("learned", packaged_prior()), packaged_prior())
    memory = NHFMemory().start_clip("Dissection", 0.0).start_clip("Coagulation", 50.0)
    rec = planner.recommend(memory)
    clip = ClipStarted(index=1, action="Coagulation", start_s=50.0, detected_s=53.0)
    factory = PayloadFactory("or-1")
    early = factory.recommendation(rec, clip, stream_time_s=53.0, stamps={})
    late = factory.recommendation(rec, clip, stream_time_s=170.0, stamps={})
    validate_payload(early)
    assert early["next_in_s"]["low"] <= early["next_in_s"]["high"]
    assert late["next_in_s"] != early["next_in_s"]  # the range follows how long the clip has lasted
    assert [r["rank"] for r in early["next_or_after"]] == [1, 2, 3, 4, 5]
    assert len(early["likeliest_two_steps"]) == 2
    assert early["ranked"][0]["score"] == pytest.approx(max(rec.ranked, key=lambda s: s.score).score)
    bad = dict(early, next_in_s={"low": -1, "high": 5})
    with pytest.raises(Exception, match="next_in_s"):
        validate_payload(bad)


# ---- split files and the evaluate report -----------------------------------------------------------------
def test_evaluate_reports_calibration_time_to_next_and_the_two_step_row_on_a_split_file(
    annotations_path: Path, tmp_path: Path
) -> None:
    from training.cholect50 import load_annotations

    data = load_annotations(annotations_path)
    train, test = (
        list(data.train_videos[:17]),
        list(data.test_videos[:3]),
    )  # test: unseen by the shipped model
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": train, "test": test}))
    out = tmp_path / "report.json"
    argv = [
        "evaluate",
        "--annotations",
        str(annotations_path),
        "--split-file",
        str(split),
        "--planner",
        "prior",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["samples"] == len(data.samples_of(test))
    assert report["split_file"] == str(split)
    assert 0 <= report["calibration"]["served"]["ece"] <= 1
    assert report["calibration"]["cv"]["cv_calibrated"]["samples"] == len(data.samples_of(train))
    assert report["next_or_after"]["samples"] == report["samples"]
    assert report["time_to_next"]["start"]["points"] > 0
    learned = tmp_path / "learned.json"
    assert main([*argv[:-4], "--planner", "learned", "--json", str(learned)]) == 0
    assert json.loads(learned.read_text())["calibration"]["model_cv"]["family"] in ("gboost", "logreg")


def test_a_learned_model_is_never_scored_on_videos_it_was_trained_on(
    annotations_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cholect50 import load_annotations

    data = load_annotations(annotations_path)
    seen = list(data.train_videos)  # the shipped model's training videos
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": seen[3:20], "test": seen[:3]}))
    out = tmp_path / "report.json"
    argv = ["evaluate", "--annotations", str(annotations_path), "--split-file", str(split)]
    capsys.readouterr()
    assert main([*argv, "--planner", "learned", "--json", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "trained on 3 of the videos it would be scored on" in err[0], err
    assert not out.exists()
    # the prior may be scored there, but not the rows the shipped sequence model would give
    assert main([*argv, "--planner", "prior", "--json", str(out)]) == 0
    assert "not reported: the sequence model was trained on 3" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert "next_or_after" not in report and "time_to_next" not in report
    # a --compare row of the learned model is refused the same way, before anything is written
    out.unlink()
    assert main([*argv, "--compare", "n=prior", "--compare", "l=learned", "--json", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "trained on 3 of the videos it would be scored on" in err[0], err
    assert not out.exists()


def test_select_fusion_refuses_a_partner_it_cannot_refit_per_fold(
    annotations_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["select-fusion", "--annotations", str(annotations_path), "--planner", "prior"]
    assert main([*argv, "--set", "planner.partner='learned'"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "select-fusion chooses λ for the n-gram partner" in err[0], err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": ["VID01"], "test": ["VID01"]}, "in both"),
        ({"train": ["VID999"], "test": []}, "not a video"),
        ({"train": [], "test": ["VID01"]}, "'train' is empty"),
        (["VID01"], "expected"),
    ],
)
def test_a_bad_split_file_is_exit_2(
    annotations_path: Path, tmp_path: Path, content: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    split = tmp_path / "split.json"
    split.write_text(json.dumps(content))
    for command in ("evaluate", "fit-learned", "select-prior"):
        code = main([command, "--annotations", str(annotations_path), "--split-file", str(split)])
        assert code == 2
        assert message in capsys.readouterr().err


def test_compare_rows_with_the_learned_planner(annotations_path: Path, tmp_path: Path) -> None:
    from training.compare import parse_compare_spec
    from training.exceptions import UsageError

    with pytest.raises(UsageError, match="not fused"):
        parse_compare_spec("x=learned+prior")
    out = tmp_path / "compare.json"
    argv = ["evaluate", "--annotations", str(annotations_path), "--compare", "prior=prior",
            "--compare", f"learned=learned:{SHIPPED}", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["learned"]["engine"] == "learned" and rows["learned"]["metrics"]["SLAcc@1"] == 64.91
