"""The commands' exit codes: 0 ok, 1 a stream failed (one line, no report), 2 bad input (one line,
nothing written). A still image is bad input, not a 0-second video."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from planner.planner import Planner
from streamer.exceptions import SourceError
from streamer.sources.video import VideoSource, check_video_file
from tests.streaming_helpers import write_timeline
from training.cli import main

pytestmark = pytest.mark.timeout(60)


def tiny_video(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(int(seconds * fps)):
            image = np.full((32, 32, 3), (i * 7) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def still_image(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def crashing_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    def recommend(self: Planner, memory: object) -> object:
        raise RuntimeError("boom in the planner stage")

    monkeypatch.setattr(Planner, "recommend", recommend)


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("llm-sap: error")]


@pytest.mark.parametrize("name", ["still.png", "still-renamed.mp4"])
async def test_a_still_image_is_not_a_video(tmp_path: Path, name: str) -> None:
    path = still_image(tmp_path / name)
    with pytest.raises(SourceError, match=r"is not a video: .* has 1 frame"):
        check_video_file(str(path))
    with pytest.raises(SourceError, match="is not a video"):
        await VideoSource(str(path)).start()
    check_video_file(str(tiny_video(tmp_path / "ok.mp4")))  # a real one passes


@pytest.mark.parametrize("command", ["replay", "serve", "demo"])
def test_a_still_image_is_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    video = still_image(tmp_path / "frame.png")
    shutil.copyfile(video, tmp_path / "frame.mp4")
    timeline = write_timeline(tmp_path / "t.csv")
    report = tmp_path / "report.json"
    argv = {
        "replay": [
            "replay",
            str(tmp_path / "frame.mp4"),
            "--timeline",
            str(timeline),
            "--report",
            str(report),
        ],
        "serve": [
            "serve",
            "--source",
            str(tmp_path / "frame.mp4"),
            "--recognizer",
            f"timeline:{timeline}",
            "--exit-when-done",
        ],
        "demo": ["demo", "--video", str(tmp_path / "frame.mp4"), "--timeline", str(timeline)],
    }[command]
    assert main(argv) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "is not a video" in err[0], err
    assert not report.exists()


@pytest.mark.usefixtures("crashing_planner")
def test_replay_with_a_failing_stage_is_exit_1_and_writes_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tiny_video(tmp_path / "v.mp4")
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Tissue Retraction"), (1.5, "Dissection")])
    report = tmp_path / "report.json"
    assert main(["replay", str(video), "--timeline", str(timeline), "--report", str(report)]) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "room replay failed" in err[0] and "boom in the planner stage" in err[0], err
    assert not report.exists()


@pytest.mark.usefixtures("crashing_planner")
def test_serve_exit_when_done_with_a_failing_stage_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tiny_video(tmp_path / "v.mp4")
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Tissue Retraction"), (1.5, "Dissection")])
    argv = ["serve", "--source", str(video), "--recognizer", f"timeline:{timeline}", "--exit-when-done",
            "--no-realtime", "--room", "or-x"]  # fmt: skip
    assert main(argv) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "room or-x failed: RuntimeError: boom" in err[0], err


@pytest.mark.usefixtures("crashing_planner")
def test_demo_with_a_failing_stage_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--speed", "200"]) == 1
    printed = capsys.readouterr().err
    err = [line for line in printed.splitlines() if line.startswith("llm-sap: error")]
    assert len(err) == 1 and "room demo failed" in err[0], printed[-3000:]


def test_demo_whose_view_cannot_subscribe_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import streamer.demo

    async def refused(url: str, room: str, console: object, **kwargs: object) -> int:
        raise ConnectionRefusedError(f"[Errno 111] Connect call failed ({url})")

    monkeypatch.setattr(streamer.demo, "watch", refused)
    assert main(["demo", "--speed", "200"]) == 1
    printed = capsys.readouterr().err
    err = [line for line in printed.splitlines() if line.startswith("llm-sap: error")]
    assert len(err) == 1 and "could not reach the embedded broker at mqtt://" in err[0], err
    assert "Connect call failed" in err[0] and "Traceback" not in printed


@pytest.mark.parametrize("speed", ["0", "-1", "nan", "inf", "1e9"])
def test_demo_speed_must_be_finite_and_positive(capsys: pytest.CaptureFixture[str], speed: str) -> None:
    assert main(["demo", "--speed", speed]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "--speed must be" in err[0], err
