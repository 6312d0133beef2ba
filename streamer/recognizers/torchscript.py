"""``torchscript:FILE``: a frame classifier saved as TorchScript, from this project or your own.

The file is what ``torch.jit.save`` writes, with one extra file ``llm-sap.json`` beside the
code (``_extra_files``) that says how to feed the model and what its outputs mean::

    {"format": "llm-sap-torchscript-recognizer", "version": 1,
     "actions": [the five labels, in the order of the model's outputs],
     "input_size": 112, "mean": [r, g, b], "std": [r, g, b],
     "meta": {"trained_on": "real" | "synthetic", ...}}

The model takes an N×3×S×S float tensor (RGB in [0, 1], normalised with ``mean``/``std``, S =
``input_size``, resized from the service's frames by ``recognizer_frame``) and returns N×5
logits. Loading needs torch only: no Python class of the model, no pickle. ``llm-sap
train-recognizer --torchscript OUT`` writes one next to its checkpoint; ``save_torchscript``
turns any ``torch.nn.Module`` with that input and output into one. (PyTorch marks TorchScript
deprecated in favour of ``torch.export`` but still loads and runs it; its deprecation warning is
silenced here.)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.actions import ACTIONS
from planner.atomic import atomic_path
from streamer.exceptions import CheckpointError
from streamer.recognizers.frame_model import FrameClassifierRecognizer

FORMAT = "llm-sap-torchscript-recognizer"
VERSION = 1
META_FILE = "llm-sap.json"


def save_torchscript(
    model: Any,
    path: Path | str,
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    meta: dict[str, Any] | None = None,
    actions: Sequence[str] = ACTIONS,
) -> None:
    """Script (or trace, when scripting fails) ``model`` in eval mode and write it atomically with
    its ``llm-sap.json``."""
    import torch

    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 points to torch.export
        try:
            scripted = torch.jit.script(model)
        except Exception:  # code TorchScript cannot compile: trace it on one input of the right shape
            scripted = torch.jit.trace(model, torch.zeros(1, 3, int(input_size), int(input_size)))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "actions": list(actions),
        "input_size": int(input_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: json.dumps(header)})


def load_torchscript(path: Path | str, rate_hz: float = 2.0) -> FrameClassifierRecognizer:
    """A recognizer over the TorchScript file; every problem is one ``CheckpointError`` line."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"torchscript recognizer {path}: file not found")
    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # still supported; see the module doc
            model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises many types for a file that is not TorchScript
        raise CheckpointError(
            f"torchscript recognizer {path}: not a TorchScript file ({type(exc).__name__})"
        ) from None
    header = _header(path, extra[META_FILE])
    return FrameClassifierRecognizer(model, header, rate_hz=rate_hz, source=str(path), name="torchscript")


def _header(path: Path, raw: str | bytes) -> dict[str, Any]:
    if not raw:
        raise CheckpointError(f"torchscript recognizer {path}: no {META_FILE} inside (see save_torchscript)")
    try:
        header = json.loads(raw)
    except ValueError:
        raise CheckpointError(f"torchscript recognizer {path}: {META_FILE} is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"torchscript recognizer {path}: {META_FILE} is not an {FORMAT} header")
    if header.get("version") != VERSION:
        raise CheckpointError(f"torchscript recognizer {path}: unsupported version {header.get('version')!r}")
    if list(header.get("actions", [])) != list(ACTIONS):
        raise CheckpointError(
            f"torchscript recognizer {path}: actions {header.get('actions')!r} differ from ours"
        )
    size = header.get("input_size")
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise CheckpointError(f"torchscript recognizer {path}: input_size must be an integer 8..1024")
    for key in ("mean", "std"):
        values = header.get(key)
        if not (
            isinstance(values, list) and len(values) == 3 and all(isinstance(v, int | float) for v in values)
        ):
            raise CheckpointError(f"torchscript recognizer {path}: {key} must be three numbers")
    if any(v <= 0 for v in header["std"]):
        raise CheckpointError(f"torchscript recognizer {path}: std must be positive")
    return header


def create(arg: str, rate_hz: float) -> FrameClassifierRecognizer:
    """The registry's factory for ``torchscript:FILE``."""
    return load_torchscript(arg, rate_hz=rate_hz)
