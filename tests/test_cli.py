import json
from pathlib import Path

import pytest

from planner.prior import SequencePrior, packaged_prior
from training.cli import main
from training.metrics import metric_keys


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("llm-sap: error: ")
    return err[0]


@pytest.mark.data
def test_evaluate_prior_on_the_real_split_beats_the_papers_top1(
    annotations_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, preds = tmp_path / "metrics.json", tmp_path / "preds.jsonl"
    code = main(["evaluate", "--annotations", str(annotations_path), "--planner", "prior",
                 "--json", str(out), "--predictions-out", str(preds)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["samples"] == 57 and report["relaxed_samples"] == 43
    assert list(report["metrics"]) == list(metric_keys())
    assert report["metrics"]["SLAcc@1"] > 47.37 and report["metrics"]["VLAcc@1"] > 54.31
    printed = capsys.readouterr().out
    assert "Paper, Table 1" in printed and f"{report['metrics']['SLAcc@1']:.2f}" in printed
    lines = preds.read_text().splitlines()
    assert len(lines) == 57 and json.loads(lines[0])["ranked"]

    # the same predictions, scored from the file, give the same numbers
    again = tmp_path / "again.json"
    assert main(["evaluate", "--annotations", str(annotations_path), "--predictions-in", str(preds),
                 "--json", str(again)]) == 0  # fmt: skip
    assert json.loads(again.read_text())["metrics"] == report["metrics"]


@pytest.mark.data
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows[1:], "predictions miss 1 of 57 samples"),
        (lambda rows: [{**rows[0], "ranked": ["Suturing"]}, *rows[1:]], "'Suturing' is not an action label"),
        (lambda rows: [*rows, rows[0]], "a second prediction"),
        (
            lambda rows: [*rows, {"video": "VID99", "clip": "1", "ranked": ["Dissection"]}],
            "VID99/1 is not a planning",
        ),
    ],
)
def test_bad_predictions_are_one_clear_error(annotations_path, tmp_path, capsys, mutate, message) -> None:  # type: ignore[no-untyped-def]
    preds = tmp_path / "p.jsonl"
    assert main(["evaluate", "--annotations", str(annotations_path), "--predictions-out", str(preds)]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    preds.write_text("".join(json.dumps(r) + "\n" for r in mutate(rows)))
    capsys.readouterr()
    out = tmp_path / "m.json"
    assert main(["evaluate", "--annotations", str(annotations_path), "--predictions-in", str(preds),
                 "--json", str(out)]) == 2  # fmt: skip
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_malformed_annotations_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps({"VID01": {"0": {"Action": "Dissection", "Action_Reg": "Dissection",
                                               "Frame_id": 0, "Test": "no"}}}))  # fmt: skip
    out = tmp_path / "m.json"
    assert main(["evaluate", "--annotations", str(bad), "--json", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "VID01 clip 0: field 'Test'" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "planner.prior.order=x"], "planner.prior.order = 'x'"),
        (["--set", "planner.bogus=1"], "planner.bogus = 1: Extra inputs are not permitted"),
        (["--set", "logging.level=loud"], "logging.level = 'loud'"),
        (["--set", "noequals"], "must look like key.path=value"),
        (["--planner", "gpt5"], "unknown planner engine 'gpt5' (known: "),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_config_is_exit_2_with_one_line(tmp_path, capsys, argv, message) -> None:  # type: ignore[no-untyped-def]
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"VID01": {"0": {"Action": "Dissection", "Action_Reg": "Dissection",
                                               "Frame_id": 0, "Test": False}}}))  # fmt: skip
    assert main(["evaluate", "--annotations", str(ann), *argv]) == 2
    assert message in _one_error_line(capsys)


def test_bad_config_file_names_key_and_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[planner.settings]\ndeadline_s = -3\n")
    assert main(["evaluate", "--annotations", str(tmp_path / "none.json"), "--config", str(cfg)]) == 2
    assert "deadline_s must be a finite number of seconds in (0, 600], got -3" in _one_error_line(capsys)


@pytest.mark.data
def test_select_prior_reproduces_the_packaged_prior(annotations_path: Path, tmp_path: Path) -> None:
    out, cv = tmp_path / "prior.json", tmp_path / "cv.json"
    assert (
        main(["select-prior", "--annotations", str(annotations_path), "--out", str(out), "--json", str(cv)])
        == 0
    )
    fresh = SequencePrior.load(out)
    shipped = packaged_prior()
    assert fresh.settings == shipped.settings and fresh.counts == shipped.counts
    report = json.loads(cv.read_text())
    assert report["winner"] == fresh.settings.describe()
    assert not set(fresh.trained_on) & {"VID06", "VID08", "VID111"}  # no test video used


def test_every_shipped_config_file_validates() -> None:
    from training.config import load_config

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert files
    for file in files:
        load_config([file])
