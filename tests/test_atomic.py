"""Atomic writes give files the mode a plain open() gives, so other users and servers can read them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from planner.atomic import (
    apply_open_modes,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_new_files_get_the_mode_open_gives(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    atomic_write_json(tmp_path / "sub" / "c.json", {"x": 1})
    expected = 0o666 & ~umask
    assert _mode(plain) == expected
    for name in ("a.txt", "b.bin", "sub/c.json"):
        assert _mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "plain.txt", "sub"]


def test_replacing_a_file_keeps_its_mode_as_writing_it_in_place_would(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0o600)
    atomic_write_json(path, {"new": True})
    assert _mode(path) == 0o600
    assert path.read_text() == '{\n  "new": true\n}\n'


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise Boom
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_library_writer_through_atomic_path_gets_the_plain_mode(tmp_path: Path) -> None:
    """``atomic_path`` hands a file name to writers that want one (torch.save, savefig)."""
    old = os.umask(0o022)
    try:
        # what torch.save(obj, name) does with the name it is given
        with atomic_path(tmp_path / "weights.bin") as tmp, open(tmp, "wb") as f:
            f.write(b"\0" * 16)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "weights.bin") == 0o644


def test_the_frame_classifier_checkpoint_is_readable_by_others(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from streamer.recognizers.frame_model import build_model, save_checkpoint

    old = os.umask(0o022)
    try:
        save_checkpoint(build_model(channels=(4, 8)), tmp_path / "rec.pt", channels=(4, 8))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "rec.pt") == 0o644


def test_apply_open_modes_opens_up_a_folder_a_library_wrote_privately(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    for name in ("adapter_model.safetensors", "ckpt/optimizer.pt"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).chmod(0o600)
    old = os.umask(0o022)
    try:
        assert apply_open_modes(tmp_path) == 2
        assert apply_open_modes(tmp_path) == 0
    finally:
        os.umask(old)
    assert _mode(tmp_path / "adapter_model.safetensors") == 0o644
    assert _mode(tmp_path / "ckpt/optimizer.pt") == 0o644


def test_current_umask_reads_without_changing(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_a_tiny_model_folder_is_readable_by_others(tmp_path: Path) -> None:
    """safetensors writes its weights 0o600; the saved checkpoint folder ends up as open() would."""
    pytest.importorskip("transformers")
    from training.tiny_models import build_tiny_model

    old = os.umask(0o022)
    try:
        out = build_tiny_model(tmp_path / "m")
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o644 for p in files}
