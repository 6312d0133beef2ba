"""The README's two commands set up and use the project's own virtual environment.

These tests run the real Makefile and .ci/setup.sh on a copy of them in a temp folder: `make -n`
shows what would run, and the venv step runs for real (without pip, to stay fast; no package is
installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _base_python() -> str:
    """The interpreter this test's venv was made from (a Python 3.11 or 3.12 outside any venv)."""
    base = getattr(sys, "_base_executable", sys.executable)
    if not base or not os.path.exists(base):
        pytest.skip("cannot find the base Python of this interpreter")
    return base


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the set-up reads: the Makefile, the set-up script and pyproject.toml."""
    proj = tmp_path / "proj"
    (proj / ".ci").mkdir(parents=True)
    for name in ("Makefile", ".ci/setup.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, proj / name)
    return proj


def _make(proj: Path, *args: str, venv: Path, python: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON", "VENV", "MAKEFLAGS")}
    return subprocess.run(
        ["make", "--no-print-directory", *args, f"VENV={venv}", f"PYTHON={python}"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_creates_the_venv_installs_into_it_and_runs_everything_from_it(project: Path) -> None:
    venv = project.parent / "venv"
    out = _make(project, "-n", "test", "demo", venv=venv)
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    text = "\n".join(lines)
    created = next(i for i, line in enumerate(lines) if "setup.sh venv" in line)
    installed = next(i for i, line in enumerate(lines) if "setup.sh install" in line)
    pytest_run = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    demo_run = next(i for i, line in enumerate(lines) if "training.cli demo" in line)
    assert created < installed < pytest_run, text
    assert installed < demo_run, text
    assert f'VENV="{venv}"' in lines[created] and f'VENV="{venv}"' in lines[installed]
    # Every Python the recipes run is the venv's own.
    python_runs = [line for line in lines if " -m " in line and "setup.sh" not in line]
    assert python_runs, text
    for line in python_runs:
        assert line.startswith(f"{venv}/bin/python -m "), line
    assert f"{venv}/bin/lint-imports" in lines


def test_make_creates_its_venv_then_reuses_it_and_installs_only_when_pyproject_changes(
    project: Path,
) -> None:
    venv = project.parent / "venv"
    python = _base_python()
    out = _make(project, f"{venv}/bin/python", "VENV_OPTS=--without-pip", venv=venv, python=python)
    assert out.returncode == 0, out.stderr
    assert f"creating {venv}" in out.stderr
    prefix = subprocess.run(
        [str(venv / "bin/python"), "-c", "import sys; print(sys.prefix, sys.version_info[:2] >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(prefix[0]) == venv and prefix[1] == "True"

    # Present: reused, not created again; the install step is still due.
    dry = _make(project, "-n", "setup", venv=venv).stdout
    assert "setup.sh venv" not in dry and "setup.sh install" in dry

    # Installed and pyproject.toml unchanged: nothing to do, so a second `make test` starts at once.
    (venv / ".installed").touch()
    assert _make(project, "-q", "setup", venv=venv).returncode == 0
    assert "setup.sh" not in _make(project, "-n", "test", venv=venv).stdout

    # pyproject.toml changed: install again (into the same venv).
    later = (venv / ".installed").stat().st_mtime + 5
    os.utime(project / "pyproject.toml", (later, later))
    assert _make(project, "-q", "setup", venv=venv).returncode == 1
    dry = _make(project, "-n", "setup", venv=venv).stdout
    assert "setup.sh install" in dry and "setup.sh venv" not in dry


def test_a_named_python_that_is_not_311_or_312_is_refused(project: Path) -> None:
    fake = project.parent / "python3.10"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    venv = project.parent / "venv"
    out = _make(project, "setup", venv=venv, python=str(fake))
    assert out.returncode != 0
    assert "is not Python 3.11 or 3.12" in out.stderr
    assert not venv.exists()


def test_make_test_fails_with_a_plain_line_when_pytest_collects_nothing(project: Path) -> None:
    """pytest's exit code 5 (no test collected) fails `make test` and says why."""
    venv = project.parent / "venv"
    (venv / "bin").mkdir(parents=True)
    # A stand-in venv whose python passes lint and type checks, and whose pytest collects nothing.
    for name, body in (
        ("python", 'case "$2" in pytest) exit 5;; esac\nexit 0'),
        ("lint-imports", "exit 0"),
    ):
        path = venv / "bin" / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    (venv / ".installed").touch()
    later = (project / "pyproject.toml").stat().st_mtime + 5
    os.utime(venv / ".installed", (later, later))
    out = _make(project, "test", venv=venv)
    assert out.returncode != 0
    assert "pytest collected no tests (exit 5): nothing was tested" in out.stderr
