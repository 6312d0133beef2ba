"""Bad input everywhere: one line ``llm-sap: error: ...``, exit 2, nothing written. Each case here
is a row of the README's bad-input table."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.exceptions import TimelineError
from streamer.recognizers.timeline import load_timeline
from tests.streaming_helpers import write_timeline
from tests.test_exit_codes import still_image, tiny_video
from training.cli import main

pytestmark = pytest.mark.timeout(60)


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("llm-sap: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("service.recommendation_ttl_s=1e12", "less than or equal to 86400"),
        ("service.recommendation_ttl_s=inf", "less than or equal to 86400"),
        ("planner.settings.fusion_weight=nan", "fusion_weight must be a finite number"),
        ("planner.settings.fusion_weight=inf", "fusion_weight must be a finite number"),
        ("planner.settings.fusion_weight=-1", "fusion_weight must be a finite number"),
        ("planner.settings.deadline_s=nan", "deadline_s must be a finite number"),
        ("planner.settings.failure_threshold=0", "failure_threshold must be in 1..1000"),
        ("planner.settings.max_response_tokens=0", "max_response_tokens must be in 1..32768"),
        ("planner.settings.cooldown_s=nan", "cooldown_s must be a finite number"),
        ("planner.engine_settings.max_new_tokens=0", "max_new_tokens must be in 1..32768"),
        ("planner.engine_settings.timeout_s=nan", "need timeout_s in (0, 3600]"),
    ],
)
def test_numeric_settings_out_of_range_are_exit_2(
    capsys: pytest.CaptureFixture[str], setting: str, words: str
) -> None:
    assert main(["demo", "--set", setting]) == 2
    assert words in _one_error(capsys)


@pytest.mark.parametrize("kind", ["latin-1", "binary", "directory"])
def test_unreadable_config_and_prior_files_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "file.toml"
    if kind == "latin-1":
        path.write_bytes("[service]\nrecognizer = 'caf\xe9'\n".encode("latin-1"))
    elif kind == "binary":
        still_image(path)
    else:
        path.mkdir()
    assert main(["demo", "--config", str(path)]) == 2
    assert str(path) in _one_error(capsys)
    assert main(["demo", "--set", f"planner.prior_path={str(path)!r}"]) == 2
    assert str(path) in _one_error(capsys)


def test_a_config_with_a_utf8_bom_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[service]\nrecommendation_ttl_s = 1e12\n")
    assert main(["demo", "--config", str(path)]) == 2  # parsed (not "invalid TOML"): the value is refused
    assert "recommendation_ttl_s" in _one_error(capsys)


def test_a_timeline_csv_with_a_utf8_bom_is_accepted_and_starts_must_be_finite(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfstart_s,action\r\n0,Tissue Retraction\r\n5.5,Dissection\r\n")
    assert load_timeline(path).rows() == [(0.0, "Tissue Retraction"), (5.5, "Dissection")]
    for bad in ("inf", "nan", "1e400"):
        path.write_text(f"start_s,action\n0,Dissection\n{bad},Coagulation\n")
        with pytest.raises(TimelineError, match="must be a finite number"):
            load_timeline(path)
    path.write_bytes(b"start_s,action\n0,Dissection\xff\n")
    with pytest.raises(TimelineError, match="not UTF-8"):
        load_timeline(path)


@pytest.mark.parametrize("case", ["parent-is-a-file", "is-a-directory", "unwritable", "is-the-video",
                                  "is-the-timeline"])  # fmt: skip
def test_replay_report_paths_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    video = tiny_video(tmp_path / "v.mp4")
    timeline = write_timeline(tmp_path / "t.csv")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    report = {
        "parent-is-a-file": tmp_path / "file" / "report.json",
        "is-a-directory": tmp_path / "dir",
        "unwritable": Path("/proc/llm-sap-report.json"),  # refused even to root
        "is-the-video": video,
        "is-the-timeline": timeline,
    }[case]
    before = {p: p.read_bytes() for p in (video, timeline)}
    assert main(["replay", str(video), "--timeline", str(timeline), "--report", str(report)]) == 2
    assert str(report) in _one_error(capsys)
    assert {p: p.read_bytes() for p in (video, timeline)} == before  # inputs untouched


def test_evaluate_checks_every_output_before_writing_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = tmp_path / "a.json"
    annotations.write_text("{}")
    (tmp_path / "plot.png").mkdir()
    json_out = tmp_path / "metrics.json"
    argv = [
        "evaluate",
        "--annotations",
        str(annotations),
        "--json",
        str(json_out),
        "--plot",
        str(tmp_path / "plot.png"),
    ]
    assert main(argv) == 2
    assert "--plot" in _one_error(capsys)
    assert not json_out.exists()


@pytest.mark.parametrize("room", ["a/b", "#", "", "x" * 65])
def test_replay_room_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str], room: str) -> None:
    video = tiny_video(tmp_path / "v.mp4")
    assert (
        main(["replay", str(video), "--timeline", str(write_timeline(tmp_path / "t.csv")), "--room", room])
        == 2
    )
    assert "--room" in _one_error(capsys)


def test_two_streams_with_the_same_room_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rooms.toml"
    config.write_text(
        '[[service.streams]]\nroom = "or-1"\nsource = "synthetic"\n'
        '[[service.streams]]\nroom = "or-1"\nsource = "synthetic"\n'
    )
    assert main(["serve", "--config", str(config), "--exit-when-done"]) == 2
    assert "room ids must be unique" in _one_error(capsys)


def test_sigterm_during_start_up_exits_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import time

    from planner.factory import SharedPlanning

    enter = SharedPlanning.__enter__

    def slow_start(self: SharedPlanning) -> SharedPlanning:  # the model is loading when SIGTERM comes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        return enter(self)

    monkeypatch.setattr(SharedPlanning, "__enter__", slow_start)
    timeline = write_timeline(tmp_path / "t.csv")
    code = main(["serve", "--source", "synthetic", "--recognizer", f"timeline:{timeline}"])
    assert code == 143 and _one_error_or_notice(capsys) == "llm-sap: stopped (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put the default back


def test_a_second_signal_while_stopping_does_not_kill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import time

    from planner.factory import SharedPlanning

    leave = SharedPlanning.__exit__

    def impatient_operator(self: SharedPlanning, *exc: object) -> None:  # SIGINT twice, then SIGTERM
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
        leave(self, *exc)

    monkeypatch.setattr(SharedPlanning, "__exit__", impatient_operator)
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Tissue Retraction"), (0.5, "Dissection")])
    argv = ["serve", "--source", "synthetic", "--recognizer", f"timeline:{timeline}", "--exit-when-done",
            "--no-realtime", "--room", "or-q"]  # fmt: skip
    # as in a terminal, whatever this test process inherited (a background job starts with SIGINT ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(argv) == 0  # finished its shutdown: no KeyboardInterrupt, no death by signal
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI put it back
    finally:
        signal.signal(signal.SIGINT, inherited)


def _one_error_or_notice(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("llm-sap:")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("distill", "--out"),
        ("select-prior", "--out"),
        ("select-prior", "--json"),
        ("select-fusion", "--json"),
        ("fit-learned", "--out"),
        ("replay-eval", "--json"),
    ],
)
def test_every_offline_output_is_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str
) -> None:
    annotations = tmp_path / "a.json"
    annotations.write_text("{}")  # never read: the outputs are checked first
    (tmp_path / "dir").mkdir()
    extra = {"distill": ["--teacher", "reference"], "select-fusion": ["--planner", "prior"]}.get(command, [])
    for bad in (tmp_path / "dir", annotations):  # a directory; the input itself
        argv = [command, "--annotations", str(annotations), *extra, flag, str(bad)]
        assert main(argv) == 2
        err = _one_error(capsys)
        assert str(bad) in err and flag in err, err
    assert annotations.read_text() == "{}"
