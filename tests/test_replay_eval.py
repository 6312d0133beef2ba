"""``llm-sap replay-eval``: the split through the live pipeline, scored; and ``evaluate --history``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main


def test_label_only_planner_live_equals_offline_on_the_real_split(
    annotations_path: Path, tmp_path: Path
) -> None:
    """The default planner (learned: labels and clip times) with the timeline oracle: what the
    live pipeline published, at both moments, scores exactly as the offline evaluation on the
    same histories, and as ``evaluate --history actions`` (the clips' Action sequence, what a
    perfect recognizer sees)."""
    out = tmp_path / "replay-eval.json"
    assert main(["replay-eval", "--annotations", str(annotations_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["samples"], report["relaxed_samples"], report["videos"]) == (57, 43, 15)
    clip_start, before_next = report["moments"]["clip_start"], report["moments"]["before_next"]
    assert clip_start == before_next == report["offline_same_history"]
    assert report["diagnostics"]["missed"] == 0
    assert report["diagnostics"]["history_differs_from_actions"] == 0
    assert report["live"]["refreshes"] == 0 and report["live"]["frames_dropped"] == 0

    offline = tmp_path / "evaluate.json"
    assert (
        main(
            [
                "evaluate",
                "--annotations",
                str(annotations_path),
                "--history",
                "actions",
                "--json",
                str(offline),
            ]
        )
        == 0
    )
    assert json.loads(offline.read_text())["metrics"] == clip_start
    assert set(clip_start) == {
        f"{m}@{k}" for m in ("SLAcc", "VLAcc", "ReSLAcc", "ReVLAcc") for k in (1, 2, 3)
    }


def _bad(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*argv, "--json", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("llm-sap: error:") and "\n" not in err
    return err


def test_the_learned_planner_is_not_replayed_on_its_training_videos(
    annotations_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay-eval", "--annotations", str(annotations_path), "--split", "train", "--planner", "learned"]
    err = _bad(argv, tmp_path / "o.json", capsys)
    assert "the learned model was trained on 35 of the videos it would be scored on" in err


def test_unknown_split_is_one_line_exit_2(annotations_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    err = _bad(
        ["replay-eval", "--annotations", str(annotations_path), "--split", "val"], tmp_path / "o.json", capsys
    )
    assert "val" in err


def test_missing_videos_folder_is_one_line_exit_2(annotations_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "no-such-folder"
    err = _bad(
        ["replay-eval", "--annotations", str(annotations_path), "--videos", str(missing)],
        tmp_path / "o.json",
        capsys,
    )
    assert str(missing) in err


def test_missing_video_is_one_line_exit_2(annotations_path: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "videos"
    folder.mkdir()
    err = _bad(
        ["replay-eval", "--annotations", str(annotations_path), "--videos", str(folder)],
        tmp_path / "o.json",
        capsys,
    )
    assert "VID06" in err and "not found" in err


def test_video_shorter_than_its_timeline_is_one_line_exit_2(  # type: ignore[no-untyped-def]
    annotations_path: Path, clips_dir: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "VID06.mp4").symlink_to(sorted(clips_dir.glob("*.mp4"))[0])  # 32 s; VID06's last clip: 1326 s
    err = _bad(
        ["replay-eval", "--annotations", str(annotations_path), "--videos", str(folder)],
        tmp_path / "o.json",
        capsys,
    )
    assert "VID06.mp4" in err and "shorter than its timeline" in err


def test_evaluate_history_actions_differs_from_the_samples_own_where_the_data_does(
    annotations_path: Path,
) -> None:
    from training.cholect50 import load_annotations
    from training.evaluate import actions_history, history_memories

    data = load_annotations(annotations_path)
    differ = [s for s in data.samples if actions_history(data, s) != s.history]
    assert len(differ) == 58  # the README: 58 samples' distant labels are earlier clips' Action_Reg
    sample = differ[0]
    from_actions = history_memories("actions", data)(sample)
    from_sample = history_memories("sample", data)(sample)
    assert from_actions.history == actions_history(data, sample) and from_sample.history == sample.history
