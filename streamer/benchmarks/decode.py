"""Decode throughput per clip: PyAV decode only, decode + RGB resize, and ``VideoSource`` replay.

``python -m streamer.benchmarks.decode [clips...] [--json OUT]``. Without clips, the real clips in
``$LLM_SAP_DATA/laparoscopic-clips`` (``LLM_SAP_DATA`` defaults to ``../shared/data`` beside the
checkout). The
``source / decode`` column is the replay pipeline's share of raw decode speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import structlog
from av.video.reformatter import VideoReformatter

from planner.logs import configure_logging
from streamer.exceptions import SourceError
from streamer.sources.video import INTERPOLATION, THREAD_TYPES, VideoSource, probe

log = structlog.get_logger(__name__)

DATA_DIR = Path(os.environ.get("LLM_SAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DEFAULT_CLIPS_DIR = DATA_DIR / "laparoscopic-clips"
DEFAULT_SIZE = (224, 224)


@dataclass(frozen=True)
class ClipBench:
    clip: str
    frames: int
    decode_fps: float
    decode_resize_fps: float
    source_fps: float

    @property
    def source_over_decode(self) -> float:
        return self.source_fps / self.decode_fps if self.decode_fps else 0.0


def _decode_fps(path: str | Path, thread_type: str, size: tuple[int, int] | None) -> float:
    """Frames/s decoding a whole file (and converting to RGB at ``size`` when given)."""
    probe(str(path))  # a clear SourceError for a bad file
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        reformatter = VideoReformatter()
        frames = 0
        started = time.perf_counter()
        for frame in container.decode(stream):
            if size is not None:
                rgb = reformatter.reformat(
                    frame, size[0], size[1], format="rgb24", interpolation=INTERPOLATION, threads=1
                )
                rgb.to_ndarray()
            frames += 1
        elapsed = time.perf_counter() - started
    return frames / elapsed if elapsed > 0 else 0.0


def decode_only_fps(path: str | Path, thread_type: str = "AUTO") -> float:
    """PyAV decode-only frames/s over a whole file (no conversion): the replay ceiling."""
    return _decode_fps(path, thread_type, None)


def decode_resize_fps(
    path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, thread_type: str = "AUTO"
) -> float:
    """Frames/s decoding and converting to RGB ``size`` with one shared reformatter."""
    return _decode_fps(path, thread_type, size)


async def _drain(source: VideoSource) -> int:
    await source.start()
    frames = 0
    try:
        while await source.next_frame() is not None:
            frames += 1
    finally:
        await source.stop()
    if source.stats.failed:
        raise SourceError(source.stats.failed)
    return frames


def source_fps(path: str | Path, size: tuple[int, int] = DEFAULT_SIZE, thread_type: str = "AUTO") -> float:
    """Frames/s through ``VideoSource.next_frame`` in lossless replay (open to last frame)."""
    source = VideoSource(str(path), realtime=False, lossless=True, output_size=size, thread_type=thread_type)
    started = time.perf_counter()
    frames = asyncio.run(_drain(source))
    elapsed = time.perf_counter() - started
    return frames / elapsed if elapsed > 0 else 0.0


def bench_clip(path: Path, size: tuple[int, int] = DEFAULT_SIZE, thread_type: str = "AUTO") -> ClipBench:
    return ClipBench(
        clip=path.name,
        frames=probe(str(path)).frames,
        decode_fps=decode_only_fps(path, thread_type),
        decode_resize_fps=decode_resize_fps(path, size, thread_type),
        source_fps=source_fps(path, size, thread_type),
    )


def format_table(rows: list[ClipBench]) -> str:
    header = f"{'clip':<48} {'frames':>6} {'decode':>8} {'+resize':>8} {'source':>8} {'src/dec':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.clip[:48]:<48} {r.frames:>6} {r.decode_fps:>8.0f} {r.decode_resize_fps:>8.0f}"
            f" {r.source_fps:>8.0f} {r.source_over_decode:>7.2f}"
        )
    lines.append("frames/s. decode: PyAV only; +resize: and RGB at the output size; source: VideoSource")
    return "\n".join(lines)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 224x224, got {text!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.benchmarks.decode", description=__doc__)
    parser.add_argument("clips", nargs="*", type=Path, help="video files (default: the real clips)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, help="output size, WxH")
    parser.add_argument("--thread-type", choices=THREAD_TYPES, default="AUTO")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning or error (to stderr)")
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level)

    clips: list[Path] = args.clips or sorted(DEFAULT_CLIPS_DIR.glob("*.mp4"))
    if not clips:
        print(f"error: no clips given and none in {DEFAULT_CLIPS_DIR}", file=sys.stderr)
        return 2
    try:
        rows = [bench_clip(clip, args.size, args.thread_type) for clip in clips]
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.json:
        payload = {
            "size": list(args.size),
            "thread_type": args.thread_type,
            "clips": [asdict(r) | {"source_over_decode": r.source_over_decode} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log.info("bench_written", path=str(args.json), clips=len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
