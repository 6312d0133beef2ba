"""Dataset evaluation of any planner on CholecT50-SAP samples, and of predictions made elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.actions import ACTIONS, is_label
from planner.atomic import atomic_write_text
from planner.memory import DEFAULT_MAX_DISTANT, DEFAULT_MAX_KEYFRAMES, NHFMemory
from planner.planner import Planner
from training.cholect50 import Annotations, PlanningSample
from training.exceptions import PredictionsError, UsageError
from training.metrics import MetricReport, Scored, compute_metrics

#: The paper's Table 1, best value per column across its models (not one model's row).
PAPER_BEST: dict[str, float] = {
    "SLAcc@1": 47.37, "SLAcc@2": 78.95, "SLAcc@3": 85.96,
    "VLAcc@1": 54.31, "VLAcc@2": 83.05, "VLAcc@3": 87.89,
    "ReSLAcc@1": 72.09, "ReSLAcc@2": 95.35, "ReSLAcc@3": 97.67,
    "ReVLAcc@1": 82.48, "ReVLAcc@2": 97.38, "ReVLAcc@3": 99.05,
}  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    video: str
    clip: str
    ranked: tuple[str, ...]
    scores: tuple[float, ...] = ()
    degraded: bool = False
    two_step: tuple[str, ...] = ()  # the "next or the one after" ranking, when the planner gives one

    def to_json(self) -> str:
        data: dict[str, object] = {"video": self.video, "clip": self.clip, "ranked": list(self.ranked)}
        if self.scores:
            data["scores"] = list(self.scores)
        if self.two_step:
            data["next_or_after"] = list(self.two_step)
        if self.degraded:
            data["degraded"] = True
        return json.dumps(data)


def memory_for(
    sample: PlanningSample, max_distant: int = DEFAULT_MAX_DISTANT, max_keyframes: int = DEFAULT_MAX_KEYFRAMES
) -> NHFMemory:
    """The sample's own history, as the paper used it (not rebuilt from earlier clips), with its
    clips' start seconds (``History``) for planners that read time."""
    return NHFMemory.from_history(
        sample.distant,
        sample.nearest,
        keyframes=sample.near_frames,
        max_distant=max_distant,
        max_keyframes=max_keyframes,
        starts=sample.history_starts if len(sample.history_starts) == len(sample.history) else (),
    )


def actions_history(data: Annotations, sample: PlanningSample) -> tuple[str, ...]:
    """a_1..a_t from the earlier clips' ``Action`` labels: what a live recognizer sees (in 58
    samples some of the sample's own distant labels are earlier clips' ``Action_Reg`` instead)."""
    index = int(sample.clip)
    return tuple(c.action for c in data.videos[sample.video] if c.index < index)


def history_memories(
    history: str,
    data: Annotations,
    max_distant: int = DEFAULT_MAX_DISTANT,
    max_keyframes: int = DEFAULT_MAX_KEYFRAMES,
) -> Callable[[PlanningSample], NHFMemory]:
    """How a sample becomes a memory: ``"sample"`` (its own Distant/Nearest fields, the paper's
    setting) or ``"actions"`` (the clips' Action sequence); the sample's near frames either way."""
    if history == "sample":
        return lambda s: memory_for(s, max_distant, max_keyframes)
    if history != "actions":
        raise ValueError(f"history must be 'sample' or 'actions', got {history!r}")

    def from_actions(sample: PlanningSample) -> NHFMemory:
        labels = actions_history(data, sample)
        index = int(sample.clip)
        starts = tuple(float(c.start_s) for c in data.videos[sample.video] if c.index < index)
        return NHFMemory.from_history(
            labels[:-1],
            labels[-1] if labels else None,
            keyframes=sample.near_frames,
            max_distant=max_distant,
            max_keyframes=max_keyframes,
            starts=starts,
        )

    return from_actions


def predict(
    planner: Planner,
    samples: Sequence[PlanningSample],
    *,
    memory_factory: Callable[[PlanningSample], NHFMemory] = memory_for,
    on_progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    out: list[Prediction] = []
    for i, sample in enumerate(samples, 1):
        rec = planner.recommend(memory_factory(sample))
        out.append(
            Prediction(
                video=sample.video,
                clip=sample.clip,
                ranked=rec.ranked_labels,
                scores=tuple(s.score for s in rec.ranked),
                degraded=rec.degraded,
                two_step=tuple(s.action for s in rec.next_or_after),
            )
        )
        if on_progress:
            on_progress(i)
    return out


def score(samples: Sequence[PlanningSample], ranked: Mapping[tuple[str, str], Sequence[str]]) -> MetricReport:
    """Metrics for predictions keyed by (video, clip); every sample must have one."""
    missing = [s.key for s in samples if s.key not in ranked]
    if missing:
        first = ", ".join(f"{v}/{c}" for v, c in missing[:3])
        raise PredictionsError(f"predictions miss {len(missing)} of {len(samples)} samples (first: {first})")
    items = [Scored(s.video, s.target, s.next_action, tuple(ranked[s.key])) for s in samples]
    return compute_metrics(items)


def write_predictions(path: Path | str, predictions: Iterable[Prediction]) -> None:
    atomic_write_text(Path(path), "".join(p.to_json() + "\n" for p in predictions))


def read_predictions(path: Path | str) -> dict[tuple[str, str], tuple[str, ...]]:
    """Read JSONL ``{"video", "clip", "ranked"}`` lines; any problem is a PredictionsError naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PredictionsError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise PredictionsError(f"{path}: not UTF-8 text") from None
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PredictionsError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PredictionsError(f"{where}: expected an object with video, clip, ranked")
        video, clip, ranked = row.get("video"), row.get("clip"), row.get("ranked")
        if not isinstance(video, str) or not isinstance(clip, str | int) or isinstance(clip, bool):
            raise PredictionsError(
                f"{where}: 'video' must be a string and 'clip' a string, got {video!r}, {clip!r}"
            )
        if not isinstance(ranked, list) or not ranked:
            raise PredictionsError(f"{where}: 'ranked' must be a non-empty list of actions, got {ranked!r}")
        for label in ranked:
            if not isinstance(label, str) or not is_label(label):
                raise PredictionsError(
                    f"{where}: {label!r} is not an action label (labels: {', '.join(ACTIONS)})"
                )
        if len(set(ranked)) != len(ranked):
            raise PredictionsError(f"{where}: 'ranked' repeats an action: {ranked}")
        key = (video, str(clip))
        if key in out:
            raise PredictionsError(f"{where}: a second prediction for {video}/{clip}")
        out[key] = tuple(ranked)
    return out


def seen_in_training(model: object, samples: Sequence[PlanningSample]) -> list[str]:
    """The scored videos a learned model was trained on (its ``trained_on``), sorted; [] for none."""
    trained = set(getattr(model, "trained_on", ()) or ())
    return sorted({s.video for s in samples} & trained)


def refuse_learned_on_its_training_videos(engine: object, samples: Sequence[PlanningSample]) -> None:
    """A learned engine is never scored on videos it was trained on (one line, exit 2)."""
    leaked = seen_in_training(getattr(engine, "learned", None), samples)
    if leaked:
        shown = ", ".join(leaked[:5]) + (", ..." if len(leaked) > 5 else "")
        raise UsageError(
            f"the learned model was trained on {len(leaked)} of the videos it would be scored on "
            f"({shown}): fit one on this split's train videos (llm-sap fit-learned --split-file FILE "
            "--out M.json) and evaluate --planner learned:M.json"
        )
