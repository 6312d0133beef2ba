"""`--help` is true: every option shows its default (or says it is required), and what it says holds."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import COMMANDS, build_parser, main
from training.commands.select_fusion import grid_edge_warning

ROOT = Path(__file__).resolve().parents[1]


def _subparser(command: str) -> argparse.ArgumentParser:
    parser, _ = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_shows_its_default_or_that_it_is_required(command: str) -> None:
    p = _subparser(command)
    text = p.format_help()
    formatter = p._get_formatter()
    for action in p._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # positional arguments, flags (off unless given), --help
        shown = formatter._get_help_string(action) or ""  # type: ignore[attr-defined]
        assert "default" in shown or "(required)" in shown, (command, action.option_strings, shown)
        if action.required:
            assert "(default" not in shown, (command, action.option_strings, shown)
    assert "%(default)" not in text


def test_select_fusion_says_planner_is_required() -> None:
    help_text = " ".join(_subparser("select-fusion").format_help().split())
    assert "--planner PLANNER engine spec:" in help_text
    options = help_text.split("options:", 1)[1]
    line = options.split("--planner PLANNER", 1)[1].split("--adapter")[0]
    assert "(required)" in line and "default" not in line


def test_serve_bind_says_when_the_page_is_on() -> None:
    help_text = " ".join(_subparser("serve").format_help().split())
    assert "Without --bind the page is on only with a webrtc source or service.web.enabled=true" in help_text


@pytest.mark.parametrize(("command", "section"), [("sft", "training.sft"), ("grpo", "training.grpo")])
def test_training_commands_list_their_config_keys(command: str, section: str) -> None:
    help_text = " ".join(_subparser(command).format_help().split())
    assert f"[{section}]" in help_text
    assert "model (required)" in help_text and "output_dir (required)" in help_text
    assert "learning_rate=" in help_text
    assert ("lora." if command == "sft" else "beta=0.01") in help_text


@pytest.mark.parametrize("command", ["sft", "grpo"])
def test_a_missing_required_key_is_one_line_before_torch_is_imported(command: str) -> None:
    code = (
        "import sys\n"
        "from training.cli import main\n"
        f"code = main([{command!r}])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "2 []", out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("llm-sap: error: config keys not set:"), out.stderr
    assert f"training.{command}.model" in errors[0]


def test_the_cli_reports_missing_keys_in_process() -> None:
    assert main(["grpo", "--set", "training.grpo.model='m'"]) == 2


def test_select_fusion_warns_when_the_weight_sits_on_the_grid_edge() -> None:
    grid = (0.0, 0.5, 1.0, 2.0)
    assert grid_edge_warning(1.0, grid) is None
    top = grid_edge_warning(2.0, grid)
    assert top is not None and "largest" in top and "widen --weights" in top
    bottom = grid_edge_warning(0.0, grid)
    assert bottom is not None and "smallest" in bottom
    assert grid_edge_warning(1.0, (1.0,)) is None


def test_the_compare_plot_keeps_its_legend_in_the_figure_and_labels_apart() -> None:
    pytest.importorskip("matplotlib")
    from training.compare import metrics_figure
    from training.metrics import metric_keys

    long = "transformers:/models/Qwen2.5-7B-Instruct@out/a-long-adapter-name+prior"
    rows = [(f"row-{i} {long}", {k: 92.0 + (i % 2) * 0.4 for k in metric_keys()}) for i in range(6)]
    fig = metrics_figure(rows)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
    assert len(legend.get_texts()) == 7  # every row and the reference
    for ax in fig.axes:
        labels = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
        assert len(labels) == 18
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                assert not a.overlaps(b), (a, b)
