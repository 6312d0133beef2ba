"""Training the streamer's frame classifier (``streamer.recognizers.frame_model``) and judging it.

The metrics (confusion matrix, per-class precision / recall / F1, frame accuracy) are pure
functions over label arrays. Training uses the model and the preprocessing that the streamer
uses at inference (``build_model``, ``preprocess``), normalised with the training frames' channel
mean and std, which the checkpoint carries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from planner.actions import ACTIONS
from streamer.recognizers.frame_model import build_model, preprocess, save_checkpoint
from training.recognizer_data import LabelledFrames

log = structlog.get_logger(__name__)

LabelArray = Sequence[int] | np.ndarray  # indices into ACTIONS


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 32
    input_size: int = 112
    channels: tuple[int, ...] = (16, 32, 64)
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    flip: bool = True  # random horizontal flips of training frames

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs, 1 <= self.epochs <= 10_000),
            ("lr", self.lr, 0.0 < self.lr <= 10.0),
            ("batch_size", self.batch_size, 1 <= self.batch_size <= 65_536),
            ("input_size", self.input_size, 16 <= self.input_size <= 1024),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
            ("threads", self.threads, self.threads is None or self.threads >= 1),
            ("channels", self.channels, bool(self.channels) and all(c >= 1 for c in self.channels)),
        ]
        for name, value, ok in checks:
            if not ok:
                raise ValueError(f"recognizer training: {name} = {value!r} is out of range")


# ---- metrics (pure) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassScores:
    precision: float | None  # None where undefined (nothing predicted / nothing true)
    recall: float | None
    f1: float | None  # 2TP / (2TP + FP + FN); None when the class is neither true nor predicted
    support: int  # true frames of the class


@dataclass(frozen=True)
class FrameMetrics:
    frames: int
    accuracy: float  # fraction of frames whose predicted label is the true one
    macro_f1: float | None  # mean F1 over the classes where it is defined
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]  # rows: true label, columns: predicted label (ACTIONS order)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {a: asdict(s) for a, s in self.per_class.items()},
            "confusion": {"labels": list(ACTIONS), "rows_true_cols_predicted": self.confusion},
        }


def confusion_matrix(true: LabelArray, predicted: LabelArray, n_classes: int = len(ACTIONS)) -> np.ndarray:
    t, p = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def frame_metrics(true: LabelArray, predicted: LabelArray, labels: Sequence[str] = ACTIONS) -> FrameMetrics:
    cm = confusion_matrix(true, predicted, len(labels))
    total = int(cm.sum())
    if not total:
        raise ValueError("no frames to score")
    per_class: dict[str, ClassScores] = {}
    for i, label in enumerate(labels):
        tp = int(cm[i, i])
        fp, fn = int(cm[:, i].sum()) - tp, int(cm[i, :].sum()) - tp
        per_class[label] = ClassScores(
            _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn), tp + fn
        )
    f1s = [s.f1 for s in per_class.values() if s.f1 is not None]
    return FrameMetrics(
        frames=total,
        accuracy=round(float(np.trace(cm)) / total, 4),
        macro_f1=round(sum(f1s) / len(f1s), 4) if f1s else None,
        per_class=per_class,
        confusion=cm.tolist(),
    )


# ---- training --------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: Any  # the torch module, in eval mode
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    epoch_losses: list[float]
    held_out: FrameMetrics
    seconds: float
    train_frames: int
    class_counts: dict[str, int] = field(default_factory=dict)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 RGB frames, in [0, 1] (std floored at 1e-3)."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3)
    return (float(mean[0]), float(mean[1]), float(mean[2])), (float(std[0]), float(std[1]), float(std[2]))


def predict_labels(
    model: Any,
    images: np.ndarray,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch: int = 256,
) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(
                model(preprocess(list(images[i : i + batch]), input_size, mean, std)).argmax(-1).numpy()
            )
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def train_recognizer(
    data: LabelledFrames,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: TrainSettings,
    *,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on the ``train_idx`` frames, then score the ``val_idx`` frames.

    ``on_step(done)`` is called after each batch (for a progress bar)."""
    import torch

    if not len(train_idx) or not len(val_idx):
        raise ValueError(f"need training and held-out frames, got {len(train_idx)} and {len(val_idx)}")
    if data.images.shape[1:3] != (settings.input_size, settings.input_size):
        raise ValueError(f"frames are {data.images.shape[1:3]}, the model input is {settings.input_size}")
    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        mean, std = channel_stats(data.images[train_idx])
        model = build_model(settings.channels)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        labels = torch.from_numpy(data.labels)
        steps_per_epoch = math.ceil(len(train_idx) / settings.batch_size)
        losses: list[float] = []
        t0 = time.perf_counter()
        for epoch in range(settings.epochs):
            batches = _batches(rng.permutation(train_idx), settings.batch_size)
            total = _train_epoch(model, optimizer, data, labels, batches, settings, rng, (mean, std),
                                 on_step, epoch * steps_per_epoch)  # fmt: skip
            losses.append(round(total / len(train_idx), 5))
            log.info(
                "recognizer.epoch",
                epoch=epoch + 1,
                loss=losses[-1],
                seconds=round(time.perf_counter() - t0, 2),
            )
        predicted = predict_labels(model, data.images[val_idx], settings.input_size, mean, std)
        held_out = frame_metrics(data.labels[val_idx], predicted)
    finally:
        torch.set_num_threads(previous_threads)
    counts = np.bincount(data.labels[train_idx], minlength=len(ACTIONS))
    return TrainResult(
        model=model.eval(),
        mean=mean,
        std=std,
        epoch_losses=losses,
        held_out=held_out,
        seconds=round(time.perf_counter() - t0, 2),
        train_frames=len(train_idx),
        class_counts={a: int(c) for a, c in zip(ACTIONS, counts, strict=True)},
    )


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [np.sort(order[i : i + size]) for i in range(0, len(order), size)]


def _train_epoch(
    model: Any,
    optimizer: Any,
    data: LabelledFrames,
    labels: Any,
    batches: list[np.ndarray],
    settings: TrainSettings,
    rng: np.random.Generator,
    stats: tuple[np.ndarray, np.ndarray],
    on_step: Callable[[int], None] | None,
    steps_before: int,
) -> float:
    """One pass over ``batches`` (optionally flipped); the summed loss over its frames."""
    import torch
    import torch.nn.functional as F

    model.train()
    total = 0.0
    for step, idx in enumerate(batches):
        x = preprocess(list(data.images[idx]), settings.input_size, *stats)
        if settings.flip:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
        loss = F.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
        optimizer.step()
        total += loss.item() * len(idx)
        if on_step:
            on_step(steps_before + step + 1)
    return total


def write_recognizer_checkpoint(
    path: Path,
    result: TrainResult,
    settings: TrainSettings,
    data: LabelledFrames,
    held_out_videos: Sequence[str],
) -> dict[str, Any]:
    """The checkpoint ``FrameClassifierRecognizer.load`` reads, written atomically; returns its meta."""
    held = set(held_out_videos)
    meta: dict[str, Any] = {
        "trained_by": "llm-sap train-recognizer",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_source": data.source,
        # the service refuses a synthetic-trained recognizer on real video unless forced
        "trained_on": "synthetic" if data.source.startswith("synthetic:") else "real",
        "classes_seen": result.class_counts,
        "train_frames": result.train_frames,
        "train_videos": [v for v in data.video_names if v not in held],
        "held_out_videos": list(held_out_videos),
        "held_out_metrics": result.held_out.to_dict(),
        "epoch_losses": result.epoch_losses,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
    }
    save_checkpoint(
        result.model,
        path,
        input_size=settings.input_size,
        channels=settings.channels,
        mean=result.mean,
        std=result.std,
        meta=meta,
    )
    return meta
