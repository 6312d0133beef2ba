"""Output paths checked before anything is written: a command either writes all its outputs or,
on bad input, none (exit 2 with one line naming the path).

``check_outputs({"--report": path, ...}, inputs=[...])`` refuses, naming the flag and the path:
a path that is a directory; a parent that is a file; a place this process cannot create a file in
(probed by creating and removing a file there, so it holds for root and read-only mounts too); a
path equal to one of the inputs (it would be overwritten); two outputs at the same path.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from planner.exceptions import PlannerError


class OutputPathError(PlannerError, ValueError):
    """An output path that cannot (or must not) be written."""


def check_outputs(outputs: Mapping[str, Path | str | None], inputs: Iterable[Path | str | None] = ()) -> None:
    """Raise ``OutputPathError`` for the first output that cannot be written (see the module doc)."""
    ins = {_same(Path(p)): Path(p) for p in inputs if p is not None and Path(p).exists()}
    seen: dict[Path, str] = {}
    for flag, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        key = _same(path)
        if key in ins:
            raise OutputPathError(f"{flag} {path}: is an input of this command (it would be overwritten)")
        if key in seen:
            raise OutputPathError(f"{flag} {path}: the same file as {seen[key]}")
        seen[key] = flag
        _check_writable(flag, path)


def _same(path: Path) -> Path:
    return path.expanduser().resolve()


def _check_writable(flag: str, path: Path) -> None:
    if path.is_dir():
        raise OutputPathError(f"{flag} {path}: is a directory (give a file name)")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{flag} {path}: is not a regular file")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{flag} {path}: {ancestor} is a file, not a directory")
    probe = ancestor / f".llm-sap-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputPathError(f"{flag} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None
    os.close(fd)
    probe.unlink(missing_ok=True)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path}: the file is not writable")
