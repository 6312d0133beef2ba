"""Write files so that a crash never leaves half a file: temp file in the same folder, then rename.

The temp file is created the way a plain ``open(path, "w")`` creates a file: mode 0o666 less the
process umask (usually 0o644), or, when ``path`` already exists, its current mode. So outputs stay
readable by the other programs and users that read them (a vLLM or trtllm-serve server, LLaMA-Factory),
unlike ``tempfile.mkstemp``'s private 0o600.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; on success it replaces ``path``, else it is removed.

    For writers that take a file name (``torch.save``, ``fig.savefig``); the temp file already exists,
    with the mode ``open()`` would give ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path | str, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _create_temp(path: Path) -> Path:
    """An empty new file beside ``path``; the kernel applies the umask, as for ``open()``."""
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            if mode is not None:  # replacing a file: keep its mode, as writing it in place would
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temp file beside {path}")
