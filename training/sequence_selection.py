"""Choose the next-action model family by cross-validation on training videos only, and fit it.

Families, all scored on the same folds:
- ``markov2``: an order-2 Markov chain (the n-gram prior with order 3, Witten-Bell, k=0.1, histories
  as given: the chain that scores 63.16 SLAcc@1 on the paper's test split);
- ``ngram``: the n-gram prior, its settings chosen inside each training fold by the same search
  ``select-prior`` runs (240 settings, grouped 5-fold inner CV), so its figure is not optimistic;
- ``logreg``: multinomial logistic regression (scikit-learn) over labels and time features, its
  L2 strength C chosen inside each training fold by grouped inner CV (log loss);
- ``gboost``: gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) over the same
  features, fixed settings (not tuned).

Every family's probabilities are calibrated by a temperature fitted on out-of-fold predictions
inside the training fold (nested), so the CV ECE and Brier are honest.

Training rows: every clip transition of the training videos, plus the first clip of each video
from an empty history (288 rows on the paper's split), each with the ``Action`` labels and start
times before it. Scored: the held-out videos' planning samples, with their own histories
(``Distant Actions``/``Nearest Action``, ``History`` start frames), as the paper did.

SELECTION_RULE (fixed before any test score was looked at): the family with the highest mean CV
SLAcc@1 (mean over the repeats of pooled held-out accuracy), then VLAcc@1, then SLAcc@2; a
remaining tie goes to the simpler family (markov2, ngram, logreg, gboost in that order). The
learned planner file holds the better of ``logreg`` and ``gboost`` by this rule. It won the CV
against the n-gram and the Markov chain on the paper's split, so ``learned`` is the default
planner (``planner.engine``); the README has the table.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planner.actions import ACTIONS
from planner.calibration import CalibrationReport, calibration_report, fit_temperature
from planner.learned import Forest, LearnedModel
from planner.prior import PriorSettings, SequencePrior
from planner.recommendation import rank_scores
from planner.sequence_features import FEATURE_NAMES, Timeline, features
from planner.time_to_next import DurationModel
from training.cholect50 import Annotations, PlanningSample
from training.metrics import MetricReport, Scored, compute_metrics

FAMILIES: tuple[str, ...] = ("markov2", "ngram", "logreg", "gboost")  # simplest first
SELECTION_KEYS: tuple[str, ...] = ("SLAcc@1", "VLAcc@1", "SLAcc@2")
SELECTION_RULE = (
    "highest mean CV SLAcc@1, then VLAcc@1, then SLAcc@2 (means over repeats of pooled held-out "
    "scores); remaining ties to the simpler family (markov2 < ngram < logreg < gboost)"
)
MARKOV2 = PriorSettings(order=3, method="interpolated", smoothing=0.1, min_count=1, collapse_repeats=False)
C_GRID: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
INNER_FOLDS = 5
GBOOST_SETTINGS: dict[str, Any] = {
    "max_iter": 100, "learning_rate": 0.05, "max_depth": 3, "min_samples_leaf": 10,
    "l2_regularization": 1.0, "random_state": 0,
}  # fmt: skip
RANGE_CHOICES: tuple[tuple[float, float], ...] = ((0.25, 0.75), (0.2, 0.8), (0.15, 0.85))
REFRESH_S = 15.0  # time-to-next is scored at clip start and every REFRESH_S seconds while a clip runs


# ---- data ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    video: str
    timeline: Timeline
    target: str


def training_rows(data: Annotations, videos: Sequence[str]) -> list[Row]:
    """Every transition (and the first clip from an empty history) of each video, in order."""
    rows = []
    for v in videos:
        clips = data.videos[v]
        labels = tuple(c.action for c in clips)
        starts = tuple(float(c.start_s) for c in clips)
        for t in range(len(clips)):
            rows.append(Row(v, Timeline(labels[:t], starts[:t]), labels[t]))
    return rows


def sample_timeline(sample: PlanningSample) -> Timeline:
    """The sample's own history with its clips' start frames (1 fps, so seconds)."""
    starts = tuple(float(s) for s in sample.history_starts) if sample.history_starts else ()
    if len(starts) != len(sample.history):
        starts = ()
    return Timeline(sample.history, starts)


def finished_clips(data: Annotations, videos: Sequence[str]) -> list[tuple[str, float]]:
    """(action, duration) of every clip whose end (the next clip's start) is known."""
    out = []
    for v in videos:
        clips = data.videos[v]
        out += [(a.action, float(b.start_s - a.start_s)) for a, b in itertools.pairwise(clips)]
    return out


def grouped_folds(videos: Sequence[str], n_folds: int, seed: int) -> list[tuple[str, ...]]:
    """Videos shuffled with ``seed`` and dealt round-robin into ``n_folds`` held-out groups."""
    order = list(videos)
    random.Random(seed).shuffle(order)
    n = max(2, min(n_folds, len(order)))
    return [tuple(order[i::n]) for i in range(n)]


# ---- families -----------------------------------------------------------------------------------------
Predictor = Callable[[Timeline], np.ndarray]  # P over ACTIONS (current action 0), calibrated


def _scale(p: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logs = np.log(p) / temperature
    logs -= logs[np.isfinite(logs)].max()
    out = np.exp(logs)
    return np.asarray(out / out.sum())


def _prior_family(settings: PriorSettings) -> Callable[[list[Row]], Predictor]:
    def fit(rows: list[Row]) -> Predictor:
        prior = SequencePrior.fit(_sequences(rows), settings)
        return lambda tl: np.array([prior.next_action_scores(tl.labels)[a] for a in ACTIONS])

    return fit


def _sequences(rows: list[Row]) -> list[tuple[str, ...]]:
    """Full label sequences of the videos the rows come from (the last row per video + its target)."""
    last: dict[str, Row] = {}
    for r in rows:
        last[r.video] = r
    return [(*r.timeline.labels, r.target) for r in last.values()]


def _matrix(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([features(r.timeline) for r in rows], dtype=float)
    y = np.array([ACTIONS.index(r.target) for r in rows], dtype=int)
    return x, y


def fit_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = np.nan_to_num(np.nanmean(np.where(np.isnan(x), np.nan, x), axis=0), nan=0.0)
    std = np.nan_to_num(np.nanstd(x, axis=0), nan=0.0)
    return mean, np.where(std > 1e-9, std, 1.0)


def fit_logreg(rows: Sequence[Row], c: float, temperature: float = 1.0, **meta: Any) -> LearnedModel:
    """A multinomial logistic regression on ``rows`` (deterministic: lbfgs from zeros)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    x, y = _matrix(rows)
    mean, scale = fit_scaling(x)
    z = np.where(np.isnan(x), 0.0, (x - mean) / scale)
    clf = LogisticRegression(C=c, max_iter=5000, tol=1e-8)
    clf.fit(z, y)
    coef = np.zeros((len(ACTIONS), len(FEATURE_NAMES)))
    intercept = np.full(len(ACTIONS), -30.0)  # a label never seen in training: vanishing probability
    for row, cls in enumerate(clf.classes_):
        coef[cls] = clf.coef_[row]
        intercept[cls] = clf.intercept_[row]
    import sklearn  # type: ignore[import-untyped]

    settings = {"C": c, "solver": "lbfgs", "penalty": "l2", "max_iter": 5000, "tol": 1e-8,
                "sklearn": sklearn.__version__}  # fmt: skip
    return LearnedModel(coef, intercept, mean, scale, temperature, settings=settings, **meta)


def _logreg_oof(rows: list[Row], c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities (T = 1) of each row under grouped inner CV."""
    videos = sorted({r.video for r in rows})
    probs, targets = [], []
    for held in grouped_folds(videos, INNER_FOLDS, seed):
        fit_rows = [r for r in rows if r.video not in held]
        model = fit_logreg(fit_rows, c)
        for r in rows:
            if r.video in held:
                probs.append(model.raw_probabilities(r.timeline))
                targets.append(ACTIONS.index(r.target))
    return np.array(probs), np.array(targets)


@dataclass(frozen=True)
class LogregChoice:
    c: float
    temperature: float
    inner_log_loss: dict[float, float] = field(default_factory=dict)


def choose_logreg(rows: list[Row], seed: int = 0) -> LogregChoice:
    """C by grouped inner CV log loss; T fitted on the same out-of-fold probabilities at that C."""
    losses: dict[float, float] = {}
    oof: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for c in C_GRID:
        p, y = _logreg_oof(rows, c, seed)
        oof[c] = (p, y)
        losses[c] = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    best = min(C_GRID, key=lambda c: (round(losses[c], 6), c))
    p, y = oof[best]
    return LogregChoice(best, fit_temperature(p, y), losses)


def _logreg_family(rows: list[Row]) -> Predictor:
    choice = choose_logreg(rows)
    model = fit_logreg(rows, choice.c, choice.temperature)
    return model.raw_probabilities


def fit_gboost(rows: Sequence[Row], temperature: float = 1.0, **meta: Any) -> LearnedModel:
    """Gradient-boosted trees (scikit-learn), exported node by node into a ``Forest`` (JSON-safe);
    checked to predict exactly what scikit-learn predicts on the training rows."""
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]

    x, y = _matrix(rows)
    clf = HistGradientBoostingClassifier(**GBOOST_SETTINGS).fit(x, y)
    classes = [int(c) for c in clf.classes_]
    baseline = np.full(len(ACTIONS), -30.0)  # a label never seen in training: vanishing probability
    base = np.ravel(clf._baseline_prediction)
    trees = []
    for iteration in clf._predictors:
        for k, tree in enumerate(iteration):
            nodes = [
                [
                    int(n["feature_idx"]),
                    float(n["num_threshold"]),
                    int(n["missing_go_to_left"]),
                    int(n["left"]),
                    int(n["right"]),
                    int(n["is_leaf"]),
                    float(n["value"]),
                ]
                for n in tree.nodes
            ]
            trees.append((classes[k] if len(classes) > 2 else classes[1], nodes))
    if len(classes) > 2:
        for k, cls in enumerate(classes):
            baseline[cls] = base[k]
    else:  # binary: one tree per iteration for the second class
        baseline[classes[0]], baseline[classes[1]] = 0.0, base[0]
    forest = Forest.from_trees(baseline, trees)
    settings = {**GBOOST_SETTINGS, "sklearn": sklearn.__version__}
    model = LearnedModel(None, None, None, None, temperature, settings=settings, family="gradient_boosting",
                         forest=forest, **meta)  # fmt: skip
    ours = np.array([_unmasked(model, row) for row in x])
    theirs = np.zeros_like(ours)
    theirs[:, classes] = clf.predict_proba(x)
    if not np.allclose(ours, theirs, atol=1e-6):
        raise AssertionError("the exported trees do not reproduce scikit-learn's probabilities")
    return model


def _unmasked(model: LearnedModel, x: np.ndarray) -> np.ndarray:
    logits = model.logits(x)
    p = np.exp(logits - logits.max())
    return np.asarray(p / p.sum())


def _gboost_fit(rows: Sequence[Row]) -> Predictor:
    model = fit_gboost(rows)
    return model.raw_probabilities


def _gboost_family(rows: list[Row]) -> Predictor:
    model = fit_gboost(rows, _gboost_temperature(rows))
    return model.raw_probabilities


def _gboost_temperature(rows: list[Row]) -> float:
    videos = sorted({r.video for r in rows})
    probs, targets = [], []
    for held in grouped_folds(videos, 3, 0):
        model = fit_gboost([r for r in rows if r.video not in held])
        for r in rows:
            if r.video in held:
                probs.append(model.raw_probabilities(r.timeline))
                targets.append(ACTIONS.index(r.target))
    return fit_temperature(np.array(probs), np.array(targets))


def _nested_ngram(rows: list[Row], data: Annotations) -> PriorSettings:
    """The n-gram's settings chosen as ``select-prior`` chooses them, on these rows' videos only."""
    from training.prior_selection import select_prior

    videos = sorted({r.video for r in rows}, key=list(data.videos).index)
    return select_prior(data, n_folds=INNER_FOLDS, train_videos=videos)[0].settings


def _calibrated_prior_family(settings: PriorSettings) -> Callable[[list[Row]], Predictor]:
    base = _prior_family(settings)

    def fit(rows: list[Row]) -> Predictor:
        videos = sorted({r.video for r in rows})
        probs, targets = [], []
        for held in grouped_folds(videos, INNER_FOLDS, 0):
            predict = base([r for r in rows if r.video not in held])
            for r in rows:
                if r.video in held:
                    probs.append(predict(r.timeline))
                    targets.append(ACTIONS.index(r.target))
        temperature = fit_temperature(np.array(probs), np.array(targets))
        final = base(rows)
        return lambda tl: _scale(final(tl), temperature)

    return fit


def family_fitters(
    data: Annotations,
) -> dict[str, tuple[Callable[[list[Row]], Predictor], Callable[[list[Row]], Predictor]]]:
    """family -> (fit uncalibrated, fit calibrated); both return a predictor. The n-gram's settings
    are chosen inside each training fold (nested), as ``select-prior`` chooses them."""
    chosen: dict[tuple[str, ...], PriorSettings] = {}

    def ngram_settings(rows: list[Row]) -> PriorSettings:
        key = tuple(sorted({r.video for r in rows}))
        if key not in chosen:
            chosen[key] = _nested_ngram(rows, data)
        return chosen[key]

    return {
        "markov2": (_prior_family(MARKOV2), _calibrated_prior_family(MARKOV2)),
        "ngram": (
            lambda rows: _prior_family(ngram_settings(rows))(rows),
            lambda rows: _calibrated_prior_family(ngram_settings(rows))(rows),
        ),
        "logreg": (_logreg_uncalibrated, _logreg_family),
        "gboost": (_gboost_fit, _gboost_family),
    }


def _logreg_uncalibrated(rows: list[Row]) -> Predictor:
    return fit_logreg(rows, choose_logreg(rows).c).raw_probabilities


# ---- cross-validation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyCV:
    family: str
    metrics: dict[str, float]  # mean over repeats of pooled held-out metrics
    fold_slacc1: tuple[float, ...]  # SLAcc@1 of every held-out fold (its spread is the noise)
    repeat_slacc1: tuple[float, ...]
    calibrated: CalibrationReport  # pooled over repeats, temperature fitted inside each training fold
    uncalibrated: CalibrationReport  # the same folds at T = 1
    two_step_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def spread(self) -> float:
        return float(np.std(self.fold_slacc1))

    def key(self) -> tuple[float, ...]:
        return tuple(self.metrics[k] for k in SELECTION_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "metrics": self.metrics,
            "slacc1_fold_mean": round(float(np.mean(self.fold_slacc1)), 2),
            "slacc1_fold_std": round(self.spread, 2),
            "slacc1_repeats": list(self.repeat_slacc1),
            "ece": round(self.calibrated.ece, 4),
            "brier_top1": round(self.calibrated.brier, 4),
            "ece_uncalibrated": round(self.uncalibrated.ece, 4),
            "brier_top1_uncalibrated": round(self.uncalibrated.brier, 4),
            "two_step_metrics": self.two_step_metrics,
        }


@dataclass(frozen=True)
class CVSettings:
    n_folds: int = 5
    repeats: int = 3
    seed: int = 0


def cross_validate_families(
    data: Annotations,
    train_videos: Sequence[str],
    families: Sequence[str] = FAMILIES,
    settings: CVSettings | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[FamilyCV]:
    """Every family on the same grouped folds of ``train_videos``; best first by SELECTION_RULE."""
    settings = settings or CVSettings()
    fitters = family_fitters(data)
    results = []
    for family in families:
        fit_raw, fit_cal = fitters[family]
        repeat_metrics: list[MetricReport] = []
        two_step: list[MetricReport] = []
        folds_acc: list[float] = []
        conf_cal: list[float] = []
        conf_raw: list[float] = []
        correct: list[bool] = []
        for rep in range(settings.repeats):
            items: list[Scored] = []
            items2: list[Scored] = []
            for held in grouped_folds(train_videos, settings.n_folds, settings.seed + rep):
                rows = training_rows(data, [v for v in train_videos if v not in held])
                cal = fit_cal(rows)
                raw = fit_raw(rows) if family != "logreg" else None
                samples = data.samples_of(held)
                fold_hits = []
                for s in samples:
                    tl = sample_timeline(s)
                    p = cal(tl)
                    ranked = ranked_labels(p, tl.current)
                    items.append(Scored(s.video, s.target, s.next_action, ranked))
                    items2.append(Scored(s.video, s.target, s.next_action, _two_step_ranked(cal, tl, p)))
                    conf_cal.append(float(p.max()))
                    pr = raw(tl) if raw is not None else _untempered(cal, tl)
                    conf_raw.append(float(pr.max()))
                    correct.append(ranked[0] == s.target)
                    fold_hits.append(ranked[0] == s.target)
                if fold_hits:
                    folds_acc.append(100.0 * sum(fold_hits) / len(fold_hits))
            repeat_metrics.append(compute_metrics(items))
            two_step.append(compute_metrics(items2))
            if on_progress:
                on_progress(f"{family} repeat {rep + 1}")
        metrics = {k: round(float(np.mean([r.metrics[k] for r in repeat_metrics])), 2)
                   for k in repeat_metrics[0].metrics}  # fmt: skip
        metrics2 = {k: round(float(np.mean([r.metrics[k] for r in two_step])), 2)
                    for k in two_step[0].metrics}  # fmt: skip
        results.append(
            FamilyCV(
                family=family,
                metrics=metrics,
                fold_slacc1=tuple(round(a, 2) for a in folds_acc),
                repeat_slacc1=tuple(r.metrics["SLAcc@1"] for r in repeat_metrics),
                calibrated=calibration_report(conf_cal, correct),
                uncalibrated=calibration_report(conf_raw, correct),
                two_step_metrics=metrics2,
            )
        )
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(results, key=lambda r: (*(-v for v in r.key()), order[r.family]))


def _untempered(predict: Predictor, tl: Timeline) -> np.ndarray:
    """For logreg, the uncalibrated probabilities are the model's at T = 1 (its bound method's owner)."""
    owner = getattr(predict, "__self__", None)
    if isinstance(owner, LearnedModel):
        return owner.raw_probabilities(tl, temperature=1.0)
    return predict(tl)


def ranked_labels(p: np.ndarray, current: str | None) -> tuple[str, ...]:
    """As the planner ranks (``rank_scores``: scores rounded to 6 decimals, ties in canonical order)."""
    return tuple(s.action for s in rank_scores(dict(zip(ACTIONS, map(float, p), strict=True)), current))


def _two_step_ranked(predict: Predictor, tl: Timeline, first: np.ndarray) -> tuple[str, ...]:
    """Rank by P(a_{t+1} = a) + P(a_{t+2} = a) with the model applied to the extended history."""
    either = np.array(first, dtype=float)
    for i, nxt in enumerate(ACTIONS):
        if first[i] <= 0:
            continue
        starts = (*tl.starts, tl.starts[-1] + 46.0) if tl.starts else ()
        either += first[i] * predict(Timeline((*tl.labels, nxt), starts))
    return tuple(sorted(ACTIONS, key=lambda a: (-either[ACTIONS.index(a)], ACTIONS.index(a))))


# ---- time to next -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeToNextReport:
    points: int
    mae_s: float  # survival model's median
    baseline_mae_s: float  # per-action median duration minus elapsed
    coverage: float  # share of actual remaining times inside [low, high]
    mean_width_s: float

    def to_dict(self) -> dict[str, float]:
        return {"points": self.points, "mae_s": round(self.mae_s, 1),
                "baseline_mae_s": round(self.baseline_mae_s, 1), "coverage": round(self.coverage, 3),
                "mean_width_s": round(self.mean_width_s, 1)}  # fmt: skip


def score_time_to_next(
    model: DurationModel, clips: Sequence[tuple[str, float]], refresh_s: float | None = REFRESH_S
) -> TimeToNextReport:
    """At clip start (``refresh_s`` None) or at start and every ``refresh_s`` seconds while it runs."""
    err, base_err, inside, width = [], [], [], []
    for action, duration in clips:
        elapsed_points = [0.0]
        if refresh_s:
            elapsed_points = list(np.arange(0.0, duration, refresh_s))
        for e in elapsed_points:
            actual = duration - e
            est = model.remaining(action, e)
            err.append(abs(est.expected_s - actual))
            base_err.append(abs(model.baseline(action, e) - actual))
            inside.append(est.low_s <= actual <= est.high_s)
            width.append(est.high_s - est.low_s)
    if not err:
        raise ValueError("no clip to score")
    return TimeToNextReport(
        len(err), float(np.mean(err)), float(np.mean(base_err)), float(np.mean(inside)), float(np.mean(width))
    )


def cross_validate_time_to_next(
    data: Annotations, train_videos: Sequence[str], settings: CVSettings | None = None
) -> dict[tuple[float, float], dict[str, TimeToNextReport]]:
    """Each range choice on the same grouped folds: at clip start and at every refresh, pooled."""
    settings = settings or CVSettings()
    out: dict[tuple[float, float], dict[str, TimeToNextReport]] = {}
    for low_q, high_q in RANGE_CHOICES:
        start_pts: list[TimeToNextReport] = []
        refresh_pts: list[TimeToNextReport] = []
        for rep in range(settings.repeats):
            for held in grouped_folds(train_videos, settings.n_folds, settings.seed + rep):
                fit_on = [v for v in train_videos if v not in held]
                model = DurationModel.fit(finished_clips(data, fit_on), low_q, high_q)
                clips = finished_clips(data, held)
                if clips:
                    start_pts.append(score_time_to_next(model, clips, None))
                    refresh_pts.append(score_time_to_next(model, clips))
        out[(low_q, high_q)] = {"start": _pool(start_pts), "refresh": _pool(refresh_pts)}
    return out


def _pool(reports: Sequence[TimeToNextReport]) -> TimeToNextReport:
    n = sum(r.points for r in reports)

    def avg(get: Callable[[TimeToNextReport], float]) -> float:
        return sum(get(r) * r.points for r in reports) / n

    return TimeToNextReport(
        n,
        avg(lambda r: r.mae_s),
        avg(lambda r: r.baseline_mae_s),
        avg(lambda r: r.coverage),
        avg(lambda r: r.mean_width_s),
    )


def choose_range(cv: dict[tuple[float, float], dict[str, TimeToNextReport]]) -> tuple[float, float]:
    """The narrowest range whose CV coverage (at every refresh) is at least 50%, else the widest."""
    for pair in RANGE_CHOICES:
        if cv[pair]["refresh"].coverage >= 0.5:
            return pair
    return RANGE_CHOICES[-1]


# ---- the final model ----------------------------------------------------------------------------------
LEARNED_FAMILIES: dict[str, str] = {"logreg": "logistic_regression", "gboost": "gradient_boosting"}


def fit_final(
    data: Annotations,
    train_videos: Sequence[str],
    range_q: tuple[float, float] = RANGE_CHOICES[0],
    cv: dict[str, Any] | None = None,
    family: str = "logreg",
) -> LearnedModel:
    """The shipped model on every training row: ``logreg`` (C and T by grouped inner CV) or
    ``gboost`` (fixed settings, T by grouped inner CV)."""
    rows = training_rows(data, train_videos)
    ttn = DurationModel.fit(finished_clips(data, train_videos), *range_q)
    meta: dict[str, Any] = {"time_to_next": ttn, "trained_on": tuple(train_videos), "cv": cv or {}}
    if family == "gboost":
        model = fit_gboost(rows, _gboost_temperature(rows), **meta)
        return replace(model, settings={**model.settings, "rows": len(rows), "temperature_folds": 3})
    if family != "logreg":
        raise ValueError(f"family must be one of {tuple(LEARNED_FAMILIES)}, got {family!r}")
    choice = choose_logreg(rows)
    model = fit_logreg(rows, choice.c, choice.temperature, **meta)
    losses = {f"{c:g}": round(v, 5) for c, v in choice.inner_log_loss.items()}
    settings = {**model.settings, "inner_folds": INNER_FOLDS, "c_grid": list(C_GRID), "rows": len(rows),
                "inner_log_loss": losses}  # fmt: skip
    return replace(model, settings=settings)
