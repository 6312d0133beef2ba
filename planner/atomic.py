"""Write files so that a crash never leaves half a file: temp file in the same folder, then rename.

The temp file is created the way a plain ``open(path, "w")`` creates a file: mode 0o666 less the
process umask (usually 0o644), or, when ``path`` already exists, its current mode. So outputs stay
readable by the other programs and users that read them (a vLLM or trtllm-serve server, LLaMA-Factory),
unlike ``tempfile.mkstemp``'s private 0o600. Folders written by other libraries that do the same
(safetensors writes 0o600 weights: LoRA adapters, merged models) get the same modes from
:func:`apply_open_modes`.
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


def apply_open_modes(folder: Path | str) -> int:
    """Give every file under ``folder`` the mode ``open()`` would have created it with (0o666 less the
    umask); returns how many changed. For folders a library wrote privately (``save_pretrained``)."""
    mode = 0o666 & ~current_umask()
    changed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
                changed += 1
    return changed


def current_umask() -> int:
    """The process umask, read without changing it (Linux reports it in /proc; elsewhere set and restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


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
