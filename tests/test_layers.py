"""The layer contracts (import-linter, pyproject.toml) hold, a wrong import breaks them, and the
offline commands run without the streaming extra."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent))

pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (dev extra)")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None
    return subprocess.run(
        [LINT], cwd=root, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root)}
    )


def test_the_tree_keeps_its_layers() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import"),
    [
        ("planner/actions.py", "import streamer.frames"),  # planner imports only itself
        ("streamer/segmenter.py", "import training.metrics"),  # streamer does not import training
        ("streamer/payloads.py", "import streamer.benchmarks.segmenter"),  # benchmarks ship nowhere
    ],
)
def test_a_wrong_import_breaks_the_contracts(tmp_path: Path, module: str, wrong_import: str) -> None:
    for package in ("planner", "streamer", "training", "tests"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout or "broken" in result.stdout


_BLOCK_STREAMING = """
import importlib.abc, sys
BLOCKED = {"av", "aiomqtt", "paho", "amqtt", "aiortc", "aiohttp", "psutil"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: no stream extra)")
        return None
sys.meta_path.insert(0, Block())
from training.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("LOADED", loaded)
sys.exit(code)
"""


def test_evaluate_runs_without_the_streaming_extra(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    clips = {str(i): {"Action": a, "Action_Reg": a, "Frame_id": 10 * i, "Test": False}
             for i, a in enumerate(["Dissection", "Coagulation", "Dissection"])}  # fmt: skip
    near_frames = [f"f{i}.png" for i in range(7)]
    clips["2"].update({"Test": True, "Distant Actions": ["Dissection"], "Nearest Action": "Coagulation",
                       "Next Action": "", "History": [0, 10], "Near Frames": near_frames})  # fmt: skip
    ann.write_text(json.dumps({"VID06": clips, "VID01": clips}))
    out = tmp_path / "m.json"
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_STREAMING, "evaluate", "--annotations", str(ann), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout
    assert json.loads(out.read_text())["samples"] == 1
