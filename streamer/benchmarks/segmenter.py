"""Measure the segmenter on synthetic recognizer output: delay, onset error, over/under-segmentation.

Each synthetic video is a random label sequence with no immediate repeats and clip durations
drawn like CholecT50-SAP's (lognormal, median 46 s, clipped to 10-600 s). A recognizer samples
it at ``--rate`` Hz (with +-20 % frame-time jitter) and outputs ``softmax(signal * one_hot +
N(0, noise))``; burst errors replace the true label by a wrong one for 0.5-2 s. Every scenario
runs the default settings and a few alternatives on the same recordings.

    python -m streamer.benchmarks.segmenter [--rate 2] [--videos 12] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from planner.actions import ACTIONS
from streamer.events import ClipStarted
from streamer.segmenter import Segmenter, SegmenterSettings

N_ACTIONS = len(ACTIONS)
MEDIAN_CLIP_S = 46.0
CLIP_LOG_SIGMA = 1.1  # fit to CholecT50-SAP clip durations (log-space std 1.11)
MIN_CLIP_S, MAX_CLIP_S = 10.0, 600.0
MATCH_TOLERANCE_S = 5.0  # a found switch starts within this of the true onset (half the shortest clip)


@dataclass(frozen=True)
class Scenario:
    """One recognizer quality: logit noise, burst errors per minute, frame rate."""

    name: str
    noise: float
    burst_per_min: float
    rate_hz: float
    signal: float = 3.0


@dataclass(frozen=True)
class Video:
    labels: np.ndarray  # action index per clip
    onsets: np.ndarray  # clip start times, stream seconds
    end_s: float


@dataclass(frozen=True)
class Recording:
    """A recognizer's output on a video."""

    video: Video
    times: np.ndarray
    truth: np.ndarray  # true action index per frame
    rows: list[dict[str, float]]  # probabilities per frame, as the segmenter takes them
    raw_correct: int  # frames whose argmax is the truth


@dataclass
class Tally:
    """Counts over all videos of one scenario and one settings variant."""

    delays: list[float] = field(default_factory=list)
    onset_errors: list[float] = field(default_factory=list)
    first_detected: list[float] = field(default_factory=list)  # detected_s of clip 0 (true onset 0)
    true_clips: int = 0
    found_clips: int = 0
    true_switches: int = 0
    matched_switches: int = 0
    false_switches: int = 0
    frames: int = 0
    seg_correct: int = 0
    live_correct: int = 0
    raw_correct: int = 0
    stream_s: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        delays = np.array(self.delays) if self.delays else np.array([np.nan])
        errors = np.abs(np.array(self.onset_errors)) if self.onset_errors else np.array([np.nan])
        return {
            "delay_p50_s": float(np.percentile(delays, 50)),
            "delay_p90_s": float(np.percentile(delays, 90)),
            "delay_max_s": float(delays.max()),
            "onset_abs_err_mean_s": float(errors.mean()),
            "first_clip_p50_s": float(np.median(self.first_detected or [np.nan])),
            "clips_found": self.found_clips,
            "clips_true": self.true_clips,
            "switches_true": self.true_switches,
            "switches_missed": self.true_switches - self.matched_switches,
            "switches_false": self.false_switches,
            "false_per_hour": self.false_switches / (self.stream_s / 3600.0),
            "frame_acc": self.seg_correct / self.frames,
            "live_acc": self.live_correct / self.frames,
            "recognizer_acc": self.raw_correct / self.frames,
            "us_per_frame": 1e6 * self.seconds / self.frames,
        }


def make_video(rng: np.random.Generator, n_clips: int) -> Video:
    """A random label sequence without immediate repeats, durations like the real data."""
    labels = [int(rng.integers(N_ACTIONS))]
    for _ in range(n_clips - 1):
        labels.append((labels[-1] + 1 + int(rng.integers(N_ACTIONS - 1))) % N_ACTIONS)
    durations = np.clip(rng.lognormal(np.log(MEDIAN_CLIP_S), CLIP_LOG_SIGMA, n_clips), MIN_CLIP_S, MAX_CLIP_S)
    onsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    return Video(np.array(labels), onsets, float(durations.sum()))


def frame_times(rng: np.random.Generator, end_s: float, rate_hz: float) -> np.ndarray:
    """Frames every ``1 / rate_hz`` s with +-20 % jitter (strictly increasing)."""
    period = 1.0 / rate_hz
    base = np.arange(0.0, end_s, period)
    jitter = rng.uniform(-0.2, 0.2, base.size) * period
    jitter[0] = 0.0
    return np.minimum(base + jitter, end_s - 1e-6)


def shown_labels(
    rng: np.random.Generator, times: np.ndarray, truth: np.ndarray, burst_per_min: float
) -> np.ndarray:
    """The labels the recognizer 'sees': the truth, with bursts of a wrong label for 0.5-2 s."""
    shown = truth.copy()
    end_s = float(times[-1])
    for _ in range(int(rng.poisson(burst_per_min * end_s / 60.0))):
        start = rng.uniform(0.0, end_s)
        inside = (times >= start) & (times < start + rng.uniform(0.5, 2.0))
        if inside.any():
            true_label = int(truth[inside][0])
            shown[inside] = (true_label + 1 + int(rng.integers(N_ACTIONS - 1))) % N_ACTIONS
    return shown


def record(rng: np.random.Generator, video: Video, scenario: Scenario) -> Recording:
    times = frame_times(rng, video.end_s, scenario.rate_hz)
    truth = video.labels[np.searchsorted(video.onsets, times, side="right") - 1]
    shown = shown_labels(rng, times, truth, scenario.burst_per_min)
    noise = rng.normal(0.0, scenario.noise, (times.size, N_ACTIONS))
    logits = scenario.signal * np.eye(N_ACTIONS)[shown] + noise
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    rows = [dict(zip(ACTIONS, row, strict=True)) for row in probs.tolist()]
    raw_correct = int((logits.argmax(axis=1) == truth).sum())
    return Recording(video, times, truth, rows, raw_correct)


def segment(settings: SegmenterSettings, rec: Recording) -> tuple[list[ClipStarted], np.ndarray]:
    """Run the segmenter: the clips it started, and the live label (-1: none yet) after each frame."""
    seg = Segmenter(settings)
    clips: list[ClipStarted] = []
    live = np.full(rec.times.size, -1)
    for i, (t, row) in enumerate(zip(rec.times.tolist(), rec.rows, strict=True)):
        clips.extend(e for e in seg.update(t, row) if isinstance(e, ClipStarted))
        if seg.current is not None:
            live[i] = ACTIONS.index(seg.current.action)
    seg.finish(rec.video.end_s)
    return clips, live


def match_switches(video: Video, clips: list[ClipStarted], tally: Tally) -> None:
    """Pair each true switch with the nearest unmatched found switch of its label."""
    found = [(c.start_s, c.detected_s, ACTIONS.index(c.action)) for c in clips[1:]]
    used: set[int] = set()
    for onset, label in zip(video.onsets[1:].tolist(), video.labels[1:].tolist(), strict=True):
        candidates = [
            k
            for k, (start, _, action) in enumerate(found)
            if k not in used and action == label and abs(start - onset) <= MATCH_TOLERANCE_S
        ]
        if not candidates:
            continue
        best = min(candidates, key=lambda k: abs(found[k][0] - onset))
        used.add(best)
        tally.delays.append(found[best][1] - onset)
        tally.onset_errors.append(found[best][0] - onset)
    tally.true_switches += len(video.onsets) - 1
    tally.matched_switches += len(used)
    tally.false_switches += len(found) - len(used)


def score(rec: Recording, clips: list[ClipStarted], live: np.ndarray, tally: Tally) -> None:
    match_switches(rec.video, clips, tally)
    tally.true_clips += len(rec.video.onsets)
    tally.found_clips += len(clips)
    if clips:
        tally.first_detected.append(clips[0].detected_s)
        starts = np.array([c.start_s for c in clips])
        labels = np.array([ACTIONS.index(c.action) for c in clips])
        k = np.searchsorted(starts, rec.times, side="right") - 1
        segmented = np.where(k >= 0, labels[np.maximum(k, 0)], -1)
        tally.seg_correct += int((segmented == rec.truth).sum())
    tally.live_correct += int((live == rec.truth).sum())
    tally.raw_correct += rec.raw_correct
    tally.frames += rec.times.size
    tally.stream_s += rec.video.end_s


def variants() -> dict[str, SegmenterSettings]:
    """The default settings and alternatives, each changing one thing."""
    base = SegmenterSettings()
    return {
        "default": base,
        "smoothing 0": replace(base, smoothing_s=0.0),
        "smoothing 1 s": replace(base, smoothing_s=1.0),
        "smoothing 3 s": replace(base, smoothing_s=3.0),
        "confirm 0.5 s": replace(base, confirm_s=0.5),
        "confirm 3 s": replace(base, confirm_s=3.0),
        "margin 0.1": replace(base, enter_margin=0.1),
        "margin 0.3": replace(base, enter_margin=0.3),
        "min clip 0 s": replace(base, min_clip_s=0.0),
        "min clip 8 s": replace(base, min_clip_s=8.0),
        "no lag comp.": replace(base, compensate_lag=False),
    }


def scenarios(rate_hz: float, burst_per_min: float) -> list[Scenario]:
    return [
        Scenario("clean one-hot (oracle)", noise=0.0, burst_per_min=0.0, rate_hz=rate_hz, signal=50.0),
        Scenario("noise 1.0 + bursts", noise=1.0, burst_per_min=burst_per_min, rate_hz=rate_hz),
        Scenario("noise 2.0 + bursts", noise=2.0, burst_per_min=burst_per_min, rate_hz=rate_hz),
        Scenario("noise 3.0 + bursts", noise=3.0, burst_per_min=burst_per_min, rate_hz=rate_hz),
    ]


@dataclass(frozen=True)
class BenchConfig:
    rate_hz: float = 2.0
    videos: int = 12
    clips_per_video: int = 15
    burst_per_min: float = 1.0
    seed: int = 0
    only_default: bool = False


def run(cfg: BenchConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Results by scenario name, then by variant name."""
    settings = variants()
    if cfg.only_default:
        settings = {"default": settings["default"]}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n, scenario in enumerate(scenarios(cfg.rate_hz, cfg.burst_per_min)):
        rng = np.random.default_rng([cfg.seed, n])
        recordings = [record(rng, make_video(rng, cfg.clips_per_video), scenario) for _ in range(cfg.videos)]
        results[scenario.name] = {}
        for name, variant in settings.items():
            tally = Tally()
            for rec in recordings:
                began = time.perf_counter()
                clips, live = segment(variant, rec)
                tally.seconds += time.perf_counter() - began
                score(rec, clips, live, tally)
            results[scenario.name][name] = tally.summary()
    return results


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("delay p50", "delay_p50_s", "{:.1f}"),
    ("p90", "delay_p90_s", "{:.1f}"),
    ("max", "delay_max_s", "{:.1f}"),
    ("|onset err|", "onset_abs_err_mean_s", "{:.2f}"),
    ("1st clip", "first_clip_p50_s", "{:.1f}"),
    ("clips/true", "", ""),
    ("missed", "switches_missed", "{}"),
    ("false", "switches_false", "{}"),
    ("false/h", "false_per_hour", "{:.1f}"),
    ("frame acc", "frame_acc", "{:.3f}"),
    ("live acc", "live_acc", "{:.3f}"),
)


def format_table(results: dict[str, dict[str, dict[str, float]]], cfg: BenchConfig) -> str:
    """Plain-text tables, one per scenario; times in stream seconds."""
    lines = [
        f"segmenter bench: {cfg.videos} videos x {cfg.clips_per_video} clips per scenario, recognizer at "
        f"{cfg.rate_hz:g} Hz, bursts {cfg.burst_per_min:g}/min, seed {cfg.seed}",
        f"defaults: {SegmenterSettings()}",
        "delay = detected_s - true onset; onset err = start_s - true onset; a switch is found when a clip of "
        f"its label starts within {MATCH_TOLERANCE_S:g} s",
    ]
    header = f"{'settings':<15}" + "".join(f"{title:>12}" for title, _, _ in COLUMNS)
    for scenario, by_variant in results.items():
        first = next(iter(by_variant.values()))
        lines += [
            "",
            f"== {scenario}: recognizer frame acc {first['recognizer_acc']:.3f}, "
            f"{first['switches_true']:.0f} true switches, segmenter {first['us_per_frame']:.0f} us/frame",
            header,
        ]
        for name, m in by_variant.items():
            cells = [
                f"{m['clips_found']:.0f}/{m['clips_true']:.0f}" if not key else fmt.format(m[key])
                for _, key, fmt in COLUMNS
            ]
            lines.append(f"{name:<15}" + "".join(f"{cell:>12}" for cell in cells))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m streamer.benchmarks.segmenter", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rate", type=float, default=2.0, help="recognizer rate in Hz (default 2)")
    parser.add_argument("--videos", type=int, default=12, help="synthetic videos per scenario (default 12)")
    parser.add_argument("--clips", type=int, default=15, help="clips per video (default 15)")
    parser.add_argument("--bursts", type=float, default=1.0, help="burst errors per minute (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-default", action="store_true", help="run the default settings only")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON"
    )
    args = parser.parse_args(argv)
    cfg = BenchConfig(args.rate, args.videos, args.clips, args.bursts, args.seed, args.only_default)
    if cfg.rate_hz <= 0 or cfg.videos < 1 or cfg.clips_per_video < 1 or cfg.burst_per_min < 0:
        parser.error(f"need --rate > 0, --videos >= 1, --clips >= 1, --bursts >= 0; got {cfg}")
    return cfg, args.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, json_path = parse_args(argv)
    results = run(cfg)
    print(format_table(results, cfg))
    if json_path is not None:
        payload = {"config": asdict(cfg), "defaults": asdict(SegmenterSettings()), "results": results}
        json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
