"""A small torch frame classifier and its checkpoint format.

Checkpoint (one file, read with ``torch.load(weights_only=True)``: tensors and plain values
only, nothing is unpickled):
``{"format": "llm-sap-frame-classifier", "version": 1, "actions": [five labels],
"input_size": 112, "channels": [16, 32, 64], "mean": [r, g, b], "std": [r, g, b],
"state_dict": {...}, "meta": {...}}``.
Training it is ``training``'s job; the streamer only loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planner.actions import ACTIONS
from planner.atomic import atomic_path
from streamer.exceptions import CheckpointError
from streamer.frames import Frame, resize_rgb

FORMAT = "llm-sap-frame-classifier"
VERSION = 1
#: The size the service decodes frames to (``service.frame_size``). Training decodes to it too and
#: then takes the same :func:`recognizer_frame` step, so the classifier sees the same pixels.
DECODE_SIZE = 224


def recognizer_frame(image: np.ndarray, input_size: int) -> np.ndarray:
    """The one resize of a recognizer frame, in training and in serving: a decoded H×W×3 RGB frame
    → ``input_size``² with area averaging (:func:`streamer.frames.resize_rgb`)."""
    return resize_rgb(image, (input_size, input_size))


def build_model(channels: Sequence[int] = (16, 32, 64), n_classes: int = len(ACTIONS)) -> Any:
    """Conv(3x3, stride 2) + BatchNorm + ReLU blocks, global average pooling, a linear head."""
    import torch.nn as nn

    layers: list[nn.Module] = []
    c_in = 3
    for c_out in channels:
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes)]
    return nn.Sequential(*layers)


def save_checkpoint(
    model: Any,
    path: Path | str,
    *,
    input_size: int = 112,
    channels: Sequence[int] = (16, 32, 64),
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    meta: dict[str, Any] | None = None,
) -> None:
    """Write atomically: a temp file in the same folder, then rename."""
    import torch

    data = {
        "format": FORMAT,
        "version": VERSION,
        "actions": list(ACTIONS),
        "input_size": int(input_size),
        "channels": [int(c) for c in channels],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def preprocess(
    images: Sequence[np.ndarray], input_size: int, mean: Sequence[float], std: Sequence[float]
) -> Any:
    """H×W×3 uint8 RGB arrays → a normalised N×3×S×S float tensor (resized by ``recognizer_frame``)."""
    import torch

    stacked = np.stack([recognizer_frame(image, input_size) for image in images])
    batch = torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (batch - m) / s


class FrameClassifierRecognizer:
    """Per-frame action probabilities from the small CNN, on CPU (or the given device)."""

    name = "checkpoint"
    needs_pixels = True
    has_ground_truth = False

    def __init__(
        self,
        model: Any,
        config: dict[str, Any],
        rate_hz: float = 2.0,
        source: str = "",
        name: str = "checkpoint",
    ) -> None:
        self.name = name  # the spec kind it was loaded from: checkpoint or torchscript
        self.model = model.eval()
        self.input_size = int(config["input_size"])
        self.mean = list(config["mean"])
        self.std = list(config["std"])
        self.rate_hz = rate_hz
        self.source = source
        self.checkpoint = source or None
        self.meta: dict[str, Any] = dict(config.get("meta") or {})
        self.trained_on = trained_on(self.meta)

    @classmethod
    def load(cls, path: Path | str, rate_hz: float = 2.0) -> FrameClassifierRecognizer:
        import torch

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"recognizer checkpoint {path} not found")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise CheckpointError(
                f"recognizer checkpoint {path}: unreadable ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"recognizer checkpoint {path}: not an {FORMAT} file")
        if data.get("version") != VERSION:
            raise CheckpointError(
                f"recognizer checkpoint {path}: unsupported version {data.get('version')!r}"
            )
        if list(data.get("actions", [])) != list(ACTIONS):
            raise CheckpointError(
                f"recognizer checkpoint {path}: actions {data.get('actions')!r} differ from ours"
            )
        model = build_model(data["channels"])
        try:
            model.load_state_dict(data["state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"recognizer checkpoint {path}: weights do not fit ({exc})") from None
        return cls(model, data, rate_hz=rate_hz, source=str(path))

    def predict(self, frames: Sequence[Frame]) -> list[dict[str, float]]:
        import torch

        if not frames:
            return []
        with torch.inference_mode():
            x = preprocess([f.image for f in frames], self.input_size, self.mean, self.std)
            probs = torch.softmax(self.model(x), dim=-1).tolist()
        return [dict(zip(ACTIONS, row, strict=True)) for row in probs]


def trained_on(meta: dict[str, Any]) -> str | None:
    """ "synthetic" or "real": what a checkpoint's frames were (its meta's ``trained_on``, or, for
    checkpoints written before that key, its ``data_source``); None when the meta does not say."""
    said = meta.get("trained_on")
    if said in ("synthetic", "real"):
        return str(said)
    source = meta.get("data_source")
    if isinstance(source, str) and source:
        return "synthetic" if source.startswith("synthetic:") else "real"
    return None


def create(arg: str, rate_hz: float) -> FrameClassifierRecognizer:
    """The registry's factory for ``checkpoint:FILE``."""
    return FrameClassifierRecognizer.load(arg, rate_hz=rate_hz)
