"""Your own recognizer: loaded from a module outside the package (or an entry point), held to the
contract; a synthetic-trained checkpoint refused on real video unless forced; the replay report
names the recognizer and its checkpoint."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.config import MqttConfig, ServiceConfig, StreamConfig
from streamer.exceptions import RecognizerError, StreamerError, UnknownRecognizerError
from streamer.frames import Frame
from streamer.recognizers import create_recognizer
from streamer.service import Service
from tests.streaming_helpers import prior_planner, write_timeline
from tests.test_exit_codes import tiny_video
from training.cli import main

PLUGIN = '''
ACTIONS = ["Aspiration", "Coagulation", "Dissection", "Tissue Retraction", "Vessel Clipping"]


class MyRecognizer:
    """Always the same action: by its mean brightness, ARG is a label."""

    name = "my-recognizer"
    needs_pixels = True
    has_ground_truth = False

    def __init__(self, arg, rate_hz):
        self.action = arg or "Dissection"
        self.rate_hz = rate_hz
        self.seen = 0

    def predict(self, frames):
        self.seen += len(frames)
        assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
        return [{a: (0.96 if a == self.action else 0.01) for a in ACTIONS} for _ in frames]


class Broken:
    name = "broken"

    def __init__(self, arg, rate_hz):
        self.rate_hz = rate_hz


class WrongOutput(MyRecognizer):
    def predict(self, frames):
        return [{"Dissection": 1.0} for _ in frames]
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A package that is not part of this project, importable as ``my_pkg.recognizer``."""
    root = tmp_path / "site"
    (root / "my_pkg").mkdir(parents=True)
    (root / "my_pkg" / "__init__.py").write_text("")
    (root / "my_pkg" / "recognizer.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
            del sys.modules[name]


def _frame() -> Frame:
    return Frame(index=0, pts_s=0.0, decoded_at=0.0, image=np.zeros((224, 224, 3), np.uint8))


def test_a_recognizer_from_outside_the_package_by_module_and_class(plugin_dir: Path) -> None:
    rec = create_recognizer("plugin:my_pkg.recognizer:MyRecognizer:Vessel Clipping", rate_hz=3.0)
    assert rec.name == "my-recognizer" and rec.rate_hz == 3.0 and rec.needs_pixels
    (probs,) = rec.predict([_frame()])
    assert max(probs, key=probs.__getitem__) == "Vessel Clipping"


def test_a_recognizer_by_entry_point(plugin_dir: Path) -> None:
    dist = plugin_dir / "my_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llm_sap.recognizers]\nmine = my_pkg.recognizer:MyRecognizer\n")
    rec = create_recognizer("plugin:mine", rate_hz=2.0)
    assert rec.name == "my-recognizer"
    with pytest.raises(UnknownRecognizerError, match="entry point 'other'"):
        create_recognizer("plugin:other")


def test_the_contract_is_checked_at_load_and_on_output(plugin_dir: Path) -> None:
    with pytest.raises(UnknownRecognizerError, match=r"Broken lacks needs_pixels \(bool\), has_ground_truth"):
        create_recognizer("plugin:my_pkg.recognizer:Broken")
    with pytest.raises(UnknownRecognizerError, match="cannot import no_such_pkg"):
        create_recognizer("plugin:no_such_pkg.mod:Thing")
    with pytest.raises(UnknownRecognizerError, match="no callable 'Nope'"):
        create_recognizer("plugin:my_pkg.recognizer:Nope")
    wrong = create_recognizer("plugin:my_pkg.recognizer:WrongOutput")
    with pytest.raises(RecognizerError, match="five actions as keys"):
        wrong.predict([_frame()])


def test_replay_with_a_plugin_recognizer_names_it_in_the_report(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tiny_video(tmp_path / "clip.mp4", seconds=3.0)
    timeline = write_timeline(tmp_path / "t.csv", [(0.0, "Dissection")])
    spec = "plugin:my_pkg.recognizer:MyRecognizer:Dissection"
    report_path = tmp_path / "report.json"
    code = main(["replay", str(video), "--timeline", str(timeline), "--recognizer", spec,
                 "--report", str(report_path)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["recognizer"]["spec"] == spec and report["recognizer"]["name"] == "my-recognizer"
    out = capsys.readouterr().out
    assert re.search(rf"recognizer\s*│\s*{re.escape(spec)}, 2 Hz", out), out


def _synthetic_checkpoint(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    from streamer.recognizers.frame_model import build_model, save_checkpoint

    path = tmp_path / "synthetic.pt"
    meta = {"data_source": "synthetic:4 videos of 60 s seed 0", "trained_on": "synthetic"}
    save_checkpoint(build_model(channels=(4, 8)), path, channels=(4, 8), meta=meta)
    return path


def _service(source: str, recognizer: str, *, force: bool = False) -> Service:
    cfg = ServiceConfig(
        streams=(StreamConfig(room="or-1", source=source),),
        recognizer=recognizer,
        force_recognizer=force,
        mqtt=MqttConfig(broker="mqtt://127.0.0.1:1"),
    )
    return Service(cfg, planner_factory=prior_planner)


def test_a_synthetic_trained_checkpoint_is_refused_on_real_video_unless_forced(tmp_path: Path) -> None:
    ckpt = _synthetic_checkpoint(tmp_path)
    with pytest.raises(StreamerError, match=r"trained on synthetic frames.*--force-recognizer"):
        _service("/videos/case-12.mp4", f"checkpoint:{ckpt}")
    with pytest.raises(StreamerError, match="trained on synthetic frames"):
        _service("rtsp://camera.or.local/stream", f"checkpoint:{ckpt}")
    forced = _service("/videos/case-12.mp4", f"checkpoint:{ckpt}", force=True)
    assert forced._recognizers["or-1"].trained_on == "synthetic"
    assert _service("synthetic", f"checkpoint:{ckpt}")._recognizers["or-1"].checkpoint == str(ckpt)


def test_checkpoints_written_before_trained_on_are_judged_by_their_data_source() -> None:
    from streamer.recognizers.frame_model import trained_on

    assert trained_on({"data_source": "synthetic:2 videos of 60 s seed 0"}) == "synthetic"
    assert trained_on({"data_source": "manifest.csv (12 videos)"}) == "real"
    assert trained_on({}) is None


# ---- TorchScript ---------------------------------------------------------------------------------
def _frames(n: int = 3) -> list[Frame]:
    rng = np.random.default_rng(0)
    return [Frame(i, float(i), rng.integers(0, 255, (224, 224, 3), dtype=np.uint8), 0.0) for i in range(n)]


def test_a_torchscript_recognizer_predicts_as_its_checkpoint_does(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from streamer.recognizers.frame_model import build_model, save_checkpoint
    from streamer.recognizers.torchscript import save_torchscript

    torch.manual_seed(0)
    model = build_model(channels=(4, 8))
    meta = {"trained_on": "real", "data_source": "manifest.csv (3 videos)"}
    mean, std = (0.4, 0.3, 0.3), (0.2, 0.25, 0.3)
    save_checkpoint(model, tmp_path / "m.pt", input_size=64, channels=(4, 8), mean=mean, std=std, meta=meta)
    save_torchscript(model, tmp_path / "m.ts", input_size=64, mean=mean, std=std, meta=meta)
    checkpoint = create_recognizer(f"checkpoint:{tmp_path / 'm.pt'}")
    scripted = create_recognizer(f"torchscript:{tmp_path / 'm.ts'}", rate_hz=1.0)
    assert scripted.name == "torchscript" and scripted.rate_hz == 1.0
    assert scripted.trained_on == "real" and scripted.checkpoint == str(tmp_path / "m.ts")  # type: ignore[attr-defined]
    frames = _frames()
    for a, b in zip(checkpoint.predict(frames), scripted.predict(frames), strict=True):
        assert set(b) == set(a) and max(abs(a[k] - b[k]) for k in a) < 1e-5


def test_a_synthetic_torchscript_is_refused_on_real_video_too(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from streamer.recognizers.frame_model import build_model
    from streamer.recognizers.torchscript import save_torchscript

    path = tmp_path / "s.ts"
    save_torchscript(build_model(channels=(4,)), path, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3,
                     meta={"trained_on": "synthetic"})  # fmt: skip
    with pytest.raises(StreamerError, match="trained on synthetic frames"):
        _service("/videos/case-12.mp4", f"torchscript:{path}")


def test_bad_torchscript_files_are_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from streamer.exceptions import CheckpointError

    not_ts = tmp_path / "junk.ts"
    not_ts.write_bytes(b"not a zip at all")
    no_header = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 5)), str(no_header))
    for path, message in (
        (tmp_path / "none.ts", "file not found"),
        (not_ts, "not a TorchScript file"),
        (no_header, "no llm-sap.json inside"),
    ):
        with pytest.raises(CheckpointError, match=message) as error:
            create_recognizer(f"torchscript:{path}")
        assert "\n" not in str(error.value)
