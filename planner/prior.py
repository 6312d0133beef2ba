"""The sequence prior: an n-gram model with back-off over clip label sequences.

It is fit on the label sequences of training videos, saved as a small JSON file, and used
both as a planner of its own (the planner of last resort) and fused with LLM scores.

Settings (chosen by leave-videos-out cross-validation, see ``training.prior_selection``):
- ``order``: n of the n-gram (1 = unigram: label frequencies only).
- ``method``: ``"backoff"`` uses the longest context seen at least ``min_count`` times
  (Katz-style, no discounting); ``"interpolated"`` mixes all context lengths with
  Witten-Bell weights.
- ``smoothing``: add-k pseudo-count on every label, so nothing has probability 0.
- ``collapse_repeats``: drop immediate repeats from a history before matching contexts
  (histories built from the second annotator's labels can repeat a label; training
  sequences never do).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from planner.actions import ACTIONS, is_label
from planner.atomic import atomic_write_text
from planner.exceptions import PriorFileError, UnknownActionError

BOS = "<s>"
FORMAT_VERSION = 1
Method = Literal["backoff", "interpolated"]


@dataclass(frozen=True)
class PriorSettings:
    # Defaults: the winner of leave-one-video-out cross-validation on the 35 training videos
    # (`llm-sap select-prior`; README "The sequence prior").
    order: int = 4
    method: Method = "interpolated"
    smoothing: float = 0.01
    min_count: int = 3
    collapse_repeats: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.order <= 8:
            raise ValueError(f"order must be in 1..8, got {self.order}")
        if self.method not in ("backoff", "interpolated"):
            raise ValueError(f"method must be 'backoff' or 'interpolated', got {self.method!r}")
        if not 0.0 < self.smoothing <= 10.0:
            raise ValueError(f"smoothing must be in (0, 10], got {self.smoothing}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")

    def describe(self) -> str:
        return (
            f"order={self.order} {self.method} k={self.smoothing:g} min_count={self.min_count}"
            f"{' collapse' if self.collapse_repeats else ''}"
        )


@dataclass
class SequencePrior:
    """Counts of next labels after each context of up to ``order - 1`` labels."""

    settings: PriorSettings = field(default_factory=PriorSettings)
    # context (labels joined by "|", "" = no context) -> label -> count
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    trained_on: tuple[str, ...] = ()

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        sequences: Iterable[Sequence[str]],
        settings: PriorSettings | None = None,
        trained_on: Sequence[str] = (),
    ) -> SequencePrior:
        settings = settings or PriorSettings()
        counts: dict[str, dict[str, int]] = {}
        for seq in sequences:
            for label in seq:
                if not is_label(label):
                    raise UnknownActionError(label, "training sequence")
            padded = [BOS] * (settings.order - 1) + list(seq)
            for i in range(settings.order - 1, len(padded)):
                target = padded[i]
                for n in range(settings.order):
                    ctx = _key(padded[i - n : i])
                    row = counts.setdefault(ctx, {})
                    row[target] = row.get(target, 0) + 1
        return cls(settings=settings, counts=counts, trained_on=tuple(trained_on))

    # ---- scoring -------------------------------------------------------------------------
    def distribution(self, history: Sequence[str]) -> dict[str, float]:
        """P(next label | history) over all five labels (sums to 1, every value > 0)."""
        hist = _collapse(history) if self.settings.collapse_repeats else list(history)
        padded = [BOS] * (self.settings.order - 1) + hist
        contexts = [padded[len(padded) - n :] if n else [] for n in range(self.settings.order)]
        if self.settings.method == "backoff":
            return self._backoff(contexts)
        return self._interpolated(contexts)

    def next_action_scores(self, history: Sequence[str]) -> dict[str, float]:
        """Like ``distribution`` but with the current action (history[-1]) excluded.

        Consecutive clips never share a label, so the current action gets probability 0
        and the other four are renormalised.
        """
        dist = self.distribution(history)
        if history:
            dist[history[-1]] = 0.0
            total = sum(dist.values())
            dist = {a: p / total for a, p in dist.items()}
        return dist

    def log_scores(self, history: Sequence[str]) -> dict[str, float]:
        """Natural-log probabilities of ``next_action_scores`` (``-inf`` for the current action)."""
        return {a: (math.log(p) if p > 0 else -math.inf) for a, p in self.next_action_scores(history).items()}

    def _smoothed(self, row: dict[str, int]) -> dict[str, float]:
        k = self.settings.smoothing
        total = sum(row.values()) + k * len(ACTIONS)
        return {a: (row.get(a, 0) + k) / total for a in ACTIONS}

    def _backoff(self, contexts: list[list[str]]) -> dict[str, float]:
        for ctx in reversed(contexts):  # longest first
            row = self.counts.get(_key(ctx))
            if row and sum(row.values()) >= self.settings.min_count:
                return self._smoothed(row)
        return {a: 1.0 / len(ACTIONS) for a in ACTIONS}

    def _interpolated(self, contexts: list[list[str]]) -> dict[str, float]:
        # Witten-Bell: p_n = (c(ctx, a) + T(ctx) * p_{n-1}(a)) / (c(ctx) + T(ctx)),
        # with T(ctx) the number of distinct labels seen after ctx.
        k = self.settings.smoothing
        probs = {a: 1.0 / len(ACTIONS) for a in ACTIONS}
        for ctx in contexts:  # shortest first
            row = self.counts.get(_key(ctx))
            if not row or sum(row.values()) < self.settings.min_count:
                continue
            total = sum(row.values())
            distinct = len(row) + k
            probs = {a: (row.get(a, 0) + distinct * probs[a]) / (total + distinct) for a in ACTIONS}
        return probs

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "format": "llm-sap-sequence-prior",
            "version": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "trained_on": list(self.trained_on),
            "counts": {ctx: dict(sorted(row.items())) for ctx, row in sorted(self.counts.items())},
        }

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file, then rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: object, source: str = "prior") -> SequencePrior:
        if not isinstance(data, dict) or data.get("format") != "llm-sap-sequence-prior":
            raise PriorFileError(f"{source}: not an llm-sap sequence prior (missing 'format')")
        if data.get("version") != FORMAT_VERSION:
            raise PriorFileError(f"{source}: unsupported version {data.get('version')!r}")
        try:
            settings = PriorSettings(**data["settings"])
        except (TypeError, ValueError, KeyError) as exc:
            raise PriorFileError(f"{source}: bad 'settings': {exc}") from exc
        raw_counts = data.get("counts")
        if not isinstance(raw_counts, dict):
            raise PriorFileError(f"{source}: 'counts' must be an object")
        counts: dict[str, dict[str, int]] = {}
        for ctx, row in raw_counts.items():
            if not isinstance(row, dict):
                raise PriorFileError(f"{source}: counts[{ctx!r}] must be an object")
            for label, n in row.items():
                if not is_label(label) or not isinstance(n, int) or n < 0:
                    raise PriorFileError(f"{source}: counts[{ctx!r}][{label!r}] = {n!r} is invalid")
            counts[str(ctx)] = {str(k): int(v) for k, v in row.items()}
        trained_on = data.get("trained_on", [])
        return cls(settings=settings, counts=counts, trained_on=tuple(str(v) for v in trained_on))

    @classmethod
    def load(cls, path: Path | str) -> SequencePrior:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PriorFileError(f"{path}: file not found") from exc
        except UnicodeDecodeError:
            raise PriorFileError(f"{path}: not UTF-8 text (a binary file?)") from None
        except OSError as exc:  # a directory, no permission
            raise PriorFileError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
        except json.JSONDecodeError as exc:
            raise PriorFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        return cls.from_dict(data, source=str(path))


def _key(ctx: Sequence[str]) -> str:
    return "|".join(ctx)


def _collapse(history: Sequence[str]) -> list[str]:
    out: list[str] = []
    for label in history:
        if not out or out[-1] != label:
            out.append(label)
    return out


def packaged_prior() -> SequencePrior:
    """The prior shipped in the package: fit with the default settings on the 35 training videos.

    Regenerate with ``llm-sap select-prior --annotations FILE --out planner/data/prior.json``;
    a test checks that it equals a fresh fit when the data is present.
    """
    text = (resources.files("planner") / "data" / "prior.json").read_text(encoding="utf-8")
    return SequencePrior.from_dict(json.loads(text), source="planner/data/prior.json")
