"""``llm-sap evaluate --compare``: several planners in one table, JSON and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.prior import PriorSettings
from training.cli import main
from training.compare import (
    CompareSpec,
    comparison_json,
    parse_compare_spec,
    parse_compare_specs,
    plot_metrics,
)
from training.evaluate import PAPER_BEST
from training.exceptions import UsageError
from training.metrics import metric_keys

pytest_plugins = ["tests.qwen_fixtures"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def matplotlib_installed() -> None:
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the models extra)")


def _assert_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) >= min_bytes
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 1000 and im.size[1] >= 600


def _unigram(annotations_path: Path, out: Path) -> Path:
    from training.cholect50 import load_annotations
    from training.prior_selection import fit_final

    fit_final(load_annotations(annotations_path), PriorSettings(order=1)).save(out)
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prior=prior", CompareSpec("prior", "prior")),
        ("uni=prior:/p/uni.json", CompareSpec("uni", "prior:/p/uni.json")),
        ("zero-shot=transformers:/m", CompareSpec("zero-shot", "transformers:/m")),
        ("sft=transformers:/m@out/sft", CompareSpec("sft", "transformers:/m", "out/sft")),
        (
            "sft+prior=transformers:/m@out/sft+prior",
            CompareSpec("sft+prior", "transformers:/m", "out/sft", True),
        ),
        ("f=transformers:/m+prior:0.5", CompareSpec("f", "transformers:/m", None, True, 0.5)),
        ("g=transformers:/m@out/a+prior-run", CompareSpec("g", "transformers:/m", "out/a+prior-run")),
    ],
)
def test_compare_syntax(text: str, expected: CompareSpec) -> None:
    assert parse_compare_spec(text) == expected


def test_fusion_weight_plain_is_zero_and_plus_prior_is_the_configured_one() -> None:
    assert parse_compare_spec("a=transformers:/m").fusion_weight(1.5) == 0.0
    assert parse_compare_spec("a=transformers:/m+prior").fusion_weight(1.5) == 1.5
    assert parse_compare_spec("a=transformers:/m+prior:0.25").fusion_weight(1.5) == 0.25


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("prior", "expected NAME=ENGINE"),
        ("=prior", "expected NAME=ENGINE"),
        ("x=", "expected NAME=ENGINE"),
        ("x=nosuch:/m", "engine 'nosuch' is unknown"),
        ("x=transformers:/m@", "'@' must be followed by an adapter"),
        ("x=@out/sft", "no engine before @"),
        ("x=prior@out/sft", "the prior engine takes no adapter"),
        ("x=prior+prior", "is not fused with itself"),
        ("x=transformers:/m+prior:abc", "fusion weight 'abc' is not a number"),
        ("x=transformers:/m+prior:-1", "fusion weight must be >= 0"),
    ],
)
def test_bad_compare_syntax_exits_2(
    argument: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, plot = tmp_path / "c.json", tmp_path / "c.png"
    argv = ["evaluate", "--annotations", str(tmp_path / "none.json"), "--compare", "ok=prior",
            "--compare", argument, "--json", str(out), "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("llm-sap: error: --compare") and message in err[0], err
    assert not out.exists() and not plot.exists()


def test_duplicate_names_and_single_planner_flags_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'a' is used twice"):
        parse_compare_specs(["a=prior", "a=prior:x.json"])
    argv = [
        "evaluate",
        "--annotations",
        str(tmp_path / "none.json"),
        "--compare",
        "a=prior",
        "--planner",
        "prior",
    ]
    assert main(argv) == 2


def test_plot_of_hand_made_rows_is_a_png(tmp_path: Path, matplotlib_installed: None) -> None:
    rows = [("a", {k: 50.0 for k in metric_keys()}), ("b", {k: 75.0 for k in metric_keys()})]
    plot_metrics(rows, tmp_path / "deep" / "plot.png")
    _assert_png(tmp_path / "deep" / "plot.png")
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["plot.png"]  # no temp file left


@pytest.mark.data
def test_compare_two_prior_settings(
    annotations_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], matplotlib_installed: None
) -> None:
    unigram = _unigram(annotations_path, tmp_path / "unigram.json")
    out, plot, single = tmp_path / "compare.json", tmp_path / "compare.png", tmp_path / "single.json"
    argv = ["evaluate", "--annotations", str(annotations_path), "--compare", "fitted=prior",
            "--compare", f"unigram=prior:{unigram}", "--json", str(out), "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "Paper, Table 1" in printed
        and "fitted (prior)" in printed
        and "unigram (prior unigram.json)" in printed
    )
    report = json.loads(out.read_text())
    assert report["samples"] == 57 and report["relaxed_samples"] == 43 and report["paper_best"] == PAPER_BEST
    fitted, uni = report["rows"]
    assert (fitted["name"], uni["name"]) == ("fitted", "unigram")
    assert list(fitted["metrics"]) == list(metric_keys()) and fitted["fusion_weight"] == 0.0
    assert "order=4" in fitted["model"] and "order=1" in uni["model"]
    assert fitted["metrics"] != uni["metrics"]  # each row plans with its own prior
    _assert_png(plot)

    # the plain evaluate of the same planner gives the same numbers (and still writes its old JSON)
    argv = ["evaluate", "--annotations", str(annotations_path), "--planner", "prior", "--json", str(single)]
    assert main(argv) == 0
    assert json.loads(single.read_text())["metrics"] == fitted["metrics"]


@pytest.mark.data
def test_single_planner_evaluate_can_plot(
    annotations_path: Path, tmp_path: Path, matplotlib_installed: None
) -> None:
    assert main(["evaluate", "--annotations", str(annotations_path), "--plot", str(tmp_path / "p.png")]) == 0
    _assert_png(tmp_path / "p.png")


@pytest.mark.data
def test_compare_tiny_model_rows_zero_shot_adapter_and_fusion(
    annotations_path: Path, tiny_qwen, tiny_lora_adapter: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model = tiny_qwen.text
    out = tmp_path / "compare.json"
    argv = ["evaluate", "--annotations", str(annotations_path), "--compare", "prior=prior",
            "--compare", f"zero-shot=transformers:{model}",
            "--compare", f"lora=transformers:{model}@{tiny_lora_adapter}",
            "--compare", f"lora+prior=transformers:{model}@{tiny_lora_adapter}+prior",
            "--set", "planner.settings.deadline_s=60", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert [r["engine"] for r in rows.values()] == ["prior", "transformers", "transformers", "transformers"]
    assert rows["zero-shot"]["adapter"] is None and rows["lora"]["adapter"] == str(tiny_lora_adapter)
    assert [rows[n]["fusion_weight"] for n in ("zero-shot", "lora", "lora+prior")] == [0.0, 0.0, 1.0]
    assert all(r["degraded"] == 0 for r in rows.values())
    # the adapter changes the ranking, and fusing with the prior changes it again
    assert rows["zero-shot"]["metrics"] != rows["lora"]["metrics"] != rows["lora+prior"]["metrics"]


def test_comparison_json_keeps_every_row() -> None:
    from training.compare import CompareRow
    from training.metrics import MetricReport

    report = MetricReport(57, 43, 15, {k: 1.0 for k in metric_keys()})
    rows = [CompareRow(CompareSpec(n, "prior"), "prior", "ngram", 0.0, report, 0, 0.1) for n in ("a", "b")]
    data = comparison_json(rows, "test")
    assert (
        [r["name"] for r in data["rows"]] == ["a", "b"] and data["samples"] == 57 and data["split"] == "test"
    )
