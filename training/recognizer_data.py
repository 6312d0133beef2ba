"""Labelled frames for the streamer's frame classifier, from three kinds of input.

- a folder of frames with a CSV ``path,label[,video]`` (paths relative to the CSV; without a
  ``video`` column a frame's video is its folder);
- videos with timelines (``start_s,action`` CSV or ``total_video_info.json#VIDxx``), sampled at
  ``sample_hz`` with PyAV in worker threads, each frame labelled with the timeline's action at
  its timestamp;
- synthetic videos from ``streamer.sources.synthetic`` (demos and tests).

Every frame goes through the serving path on load: decoded (or drawn) at the service's frame size
``decode_size`` (``service.frame_size``, default 224) with area averaging, then resized to
``input_size``×``input_size`` by ``recognizer_frame``, the one function the live recognizer uses.
Any bad input is a ``RecognizerDataError`` (one line naming the file, the line and the value).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from planner.actions import ACTIONS, is_label, to_label
from streamer.frames import resize_rgb
from streamer.recognizers.frame_model import DECODE_SIZE, recognizer_frame
from training.exceptions import TrainingError

log = structlog.get_logger(__name__)

Progress = Callable[[int], None]


class RecognizerDataError(TrainingError, ValueError):
    """Frames or labels that cannot be used: a missing file, an unknown label, an undecodable video."""


@dataclass(frozen=True)
class LabelledFrames:
    images: np.ndarray  # N×S×S×3 uint8 RGB
    labels: np.ndarray  # N int64, indices into ACTIONS
    videos: tuple[str, ...]  # N video names (the held-out split is by video)
    source: str  # what the frames came from, for the checkpoint's meta

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.labels) == len(self.videos):
            raise ValueError("images, labels and videos must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def video_names(self) -> list[str]:
        """Distinct video names in first-seen order."""
        return list(dict.fromkeys(self.videos))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(ACTIONS))
        return {a: int(c) for a, c in zip(ACTIONS, counts, strict=True)}


def _label(text: str, where: str) -> int:
    label = text.strip() if is_label(text.strip()) else to_label(text)
    if label is None:
        raise RecognizerDataError(f"{where}: unknown label {text!r} (labels: {', '.join(ACTIONS)})")
    return ACTIONS.index(label)


def _stack(
    images: Sequence[np.ndarray], labels: Sequence[int], videos: Sequence[str], source: str
) -> LabelledFrames:
    if not images:
        raise RecognizerDataError(f"{source}: no frames")
    return LabelledFrames(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(videos), source)


# ---- a folder of frames with a CSV ----------------------------------------------------------------
def load_image(path: Path, input_size: int, decode_size: int = DECODE_SIZE) -> np.ndarray:
    """A still as the service would see it: at ``decode_size``², then ``recognizer_frame``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise RecognizerDataError(f"frame {path} not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise RecognizerDataError(f"frame {path}: not an image Pillow can read ({exc})") from None
    return recognizer_frame(resize_rgb(rgb, (decode_size, decode_size)), input_size)


@dataclass(frozen=True)
class FrameRows:
    csv_path: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    videos: tuple[str, ...]


def read_frame_csv(csv_path: Path) -> FrameRows:
    """Rows ``path,label[,video]`` with that header; ``path`` relative to the CSV's folder; without a
    ``video`` column a frame's video is its folder."""
    try:
        text = csv_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecognizerDataError(f"frames CSV {csv_path} not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise RecognizerDataError(f"frames CSV {csv_path}: cannot read ({type(exc).__name__})") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header[:2] != ["path", "label"] or header[2:] not in ([], ["video"]):
        raise RecognizerDataError(f"{csv_path}: line 1: header must be 'path,label[,video]', got {header!r}")
    if len(rows) < 2:
        raise RecognizerDataError(f"{csv_path}: no frames listed")
    paths, labels, videos = [], [], []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(header) or not row[0].strip():
            raise RecognizerDataError(f"{csv_path}: line {n}: expected {','.join(header)}, got {row!r}")
        rel = Path(row[0].strip())
        paths.append(csv_path.parent / rel)
        labels.append(_label(row[1], f"{csv_path}: line {n}"))
        videos.append(row[2].strip() if len(row) > 2 and row[2].strip() else (rel.parent.as_posix() or "."))
    return FrameRows(csv_path, tuple(paths), tuple(labels), tuple(videos))


def load_frames(
    rows: FrameRows, input_size: int, *, workers: int = 2, on_progress: Progress | None = None
) -> LabelledFrames:
    """Read and resize the listed frames in ``workers`` threads."""
    images: list[np.ndarray] = []
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="load-frames") as pool:
        for i, image in enumerate(pool.map(lambda p: load_image(p, input_size), rows.paths), 1):
            images.append(image)
            if on_progress:
                on_progress(i)
    log.info(
        "recognizer_data.frames", csv=str(rows.csv_path), frames=len(images), videos=len(set(rows.videos))
    )
    return _stack(images, rows.labels, rows.videos, f"frames:{rows.csv_path}")


# ---- videos with timelines --------------------------------------------------------------------------
def read_manifest(path: Path) -> list[tuple[str, str]]:
    """Rows ``video,timeline`` with that header, paths relative to the manifest (``#VIDxx`` kept)."""
    try:
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8").splitlines()) if r and any(r)]
    except FileNotFoundError:
        raise RecognizerDataError(f"manifest {path} not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise RecognizerDataError(f"manifest {path}: cannot read ({type(exc).__name__})") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["video", "timeline"]:
        raise RecognizerDataError(f"{path}: line 1: header must be 'video,timeline'")
    out = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise RecognizerDataError(f"{path}: line {n}: expected video,timeline, got {row!r}")
        out.append((str(path.parent / row[0].strip()), str(path.parent / row[1].strip())))
    if not out:
        raise RecognizerDataError(f"{path}: no videos listed")
    return out


def sample_video(
    video: str, input_size: int, sample_hz: float, decode_size: int = DECODE_SIZE
) -> tuple[list[np.ndarray], list[float]]:
    """Decode ``video`` and keep one frame per 1/``sample_hz`` s (the first at or after each tick),
    converted to RGB as the video source does (``decode_size``², area), then ``recognizer_frame``.
    Raises RecognizerDataError if it does not decode."""
    import av
    from av.video.reformatter import VideoReformatter

    from streamer.sources.video import INTERPOLATION

    if not Path(video).is_file():
        raise RecognizerDataError(f"video {video} not found")
    step, next_t = 1.0 / sample_hz, 0.0
    images: list[np.ndarray] = []
    times: list[float] = []
    reformatter = VideoReformatter()
    try:
        with av.open(video) as container:
            if not container.streams.video:
                raise RecognizerDataError(f"video {video}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or 25)
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / fps
                if t + 1e-6 < next_t:
                    continue
                rgb = reformatter.reformat(
                    frame, decode_size, decode_size, format="rgb24", interpolation=INTERPOLATION, threads=1
                )
                images.append(recognizer_frame(rgb.to_ndarray(), input_size))
                times.append(t)
                while next_t <= t + 1e-6:
                    next_t += step
    except av.FFmpegError as exc:
        raise RecognizerDataError(
            f"video {video} does not decode ({exc.strerror or type(exc).__name__})"
        ) from None
    if not images:
        raise RecognizerDataError(f"video {video} does not decode (no frames)")
    return images, times


def from_videos(
    pairs: Sequence[tuple[str, str]],
    input_size: int,
    *,
    sample_hz: float = 1.0,
    workers: int = 2,
    on_progress: Progress | None = None,
) -> LabelledFrames:
    """(video, timeline spec) pairs; the video's name (for the split) is its file stem."""
    from streamer.recognizers.timeline import load_timeline

    if sample_hz <= 0:
        raise RecognizerDataError(f"sample rate must be > 0 Hz, got {sample_hz!r}")
    names = [Path(v).stem for v, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RecognizerDataError(
            f"two videos are named {dupes[0]!r}: the held-out split needs distinct names"
        )
    timelines = [load_timeline(spec) for _, spec in pairs]  # TimelineError (exit 2) before any decoding
    images: list[np.ndarray] = []
    labels: list[int] = []
    videos: list[str] = []
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode-recognizer") as pool:
        jobs = [pool.submit(sample_video, v, input_size, sample_hz) for v, _ in pairs]
        for i, (job, timeline, name) in enumerate(zip(jobs, timelines, names, strict=True), 1):
            try:
                frames, times = job.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # do not decode the rest for nothing
                raise
            images += frames
            labels += [ACTIONS.index(timeline.action_at(t)) for t in times]
            videos += [name] * len(frames)
            log.info("recognizer_data.video", video=name, frames=len(frames), timeline=timeline.source)
            if on_progress:
                on_progress(i)
    return _stack(images, labels, videos, f"videos:{len(pairs)} with timelines at {sample_hz:g} Hz")


# ---- synthetic ---------------------------------------------------------------------------------------
def synthetic_timeline(duration_s: float, rng: np.random.Generator) -> list[tuple[float, str]]:
    """Clips of 10-30 s (the last may be shorter) with no two consecutive clips sharing a label."""
    rows: list[tuple[float, str]] = []
    start = 0.0
    while start < duration_s:
        choices = [a for a in ACTIONS if not rows or a != rows[-1][1]]
        rows.append((start, choices[int(rng.integers(len(choices)))]))
        start += float(rng.uniform(10.0, 30.0))
    return rows


def from_synthetic(
    n_videos: int,
    input_size: int,
    *,
    duration_s: float = 60.0,
    sample_hz: float = 1.0,
    seed: int = 0,
    on_progress: Progress | None = None,
    decode_size: int = DECODE_SIZE,
) -> LabelledFrames:
    """``n_videos`` synthetic videos (random timelines), drawn at ``decode_size`` and ``sample_hz``,
    resized to ``input_size`` as the live recognizer does."""
    from streamer.sources.synthetic import SyntheticSource

    if n_videos < 1 or duration_s <= 0 or sample_hz <= 0:
        raise RecognizerDataError(
            f"synthetic data needs videos >= 1, duration > 0 and a rate > 0; got {n_videos}, "
            f"{duration_s!r} s, {sample_hz!r} Hz"
        )
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int] = []
    videos: list[str] = []
    for v in range(n_videos):
        timeline = synthetic_timeline(duration_s, rng)
        source = SyntheticSource(
            timeline, duration_s=duration_s, fps=sample_hz, size=(decode_size, decode_size)
        )
        frame_rng = np.random.default_rng([seed, v])
        for index in range(source.frame_count):
            images.append(recognizer_frame(source.render(index, frame_rng), input_size))
            labels.append(ACTIONS.index(source.action_at(index / sample_hz)))
            videos.append(f"synthetic-{v:03d}")
        if on_progress:
            on_progress(v + 1)
    return _stack(images, labels, videos, f"synthetic:{n_videos} videos of {duration_s:g} s seed {seed}")


# ---- the held-out split ----------------------------------------------------------------------------
def split_by_video(
    data: LabelledFrames, val_videos: Sequence[str] = (), val_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Train and held-out frame indices, and the held-out video names: ``val_videos`` when given,
    else a seeded random ``val_fraction`` of the videos (at least one; at least one left to train)."""
    names = data.video_names
    if len(names) < 2:
        raise RecognizerDataError(
            f"{data.source}: one video ({names[0]!r}); a held-out split needs two or more"
        )
    if val_videos:
        unknown = [v for v in val_videos if v not in names]
        if unknown:
            raise RecognizerDataError(
                f"held-out video {unknown[0]!r} is not in the data (videos: {', '.join(names)})"
            )
        held = list(dict.fromkeys(val_videos))
    else:
        if not 0.0 < val_fraction < 1.0:
            raise RecognizerDataError(f"held-out fraction must be in (0, 1), got {val_fraction!r}")
        count = min(len(names) - 1, max(1, round(len(names) * val_fraction)))
        order = np.random.default_rng(seed).permutation(len(names))
        held = [names[i] for i in sorted(order[:count])]
    if len(held) == len(names):
        raise RecognizerDataError("every video is held out: leave at least one to train on")
    is_val = np.isin(np.asarray(data.videos), held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), held
