from pathlib import Path

import numpy as np
import pytest

from planner.prior import PriorSettings
from training.cholect50 import load_annotations
from training.metrics import Scored, compute_metrics, metric_keys
from training.prior_selection import fit_final, rank_with_prior

R = ("Dissection", "Coagulation", "Tissue Retraction", "Vessel Clipping", "Aspiration")


def test_hand_computed_example() -> None:
    items = [
        Scored("V1", "Dissection", "Coagulation", R),  # top-1 hit
        Scored("V1", "Tissue Retraction", None, R),  # top-3 hit; not relaxed-counted
        Scored("V2", "Coagulation", "Dissection", R),  # top-2 hit; relaxed top-1 hit via next
        Scored("V2", "Aspiration", "Vessel Clipping", R),  # top-5; relaxed top-4
    ]
    report = compute_metrics(items)
    assert (report.samples, report.relaxed_samples, report.videos) == (4, 3, 2)
    m = report.metrics
    assert m["SLAcc@1"] == 25.0 and m["SLAcc@2"] == 50.0 and m["SLAcc@3"] == 75.0
    # per video @1: V1 1/2, V2 0/2 -> 25; @2: V1 1/2, V2 1/2 -> 50; @3: V1 2/2, V2 1/2 -> 75
    assert (m["VLAcc@1"], m["VLAcc@2"], m["VLAcc@3"]) == (25.0, 50.0, 75.0)
    # relaxed over 3: @1 V1 hit, V2a hit via next, V2b miss -> 66.67
    assert m["ReSLAcc@1"] == 66.67 and m["ReSLAcc@3"] == 66.67
    # relaxed per video @1: V1 1/1, V2 1/2 -> 75
    assert m["ReVLAcc@1"] == 75.0
    assert list(m) == list(metric_keys())


def _independent(targets, nexts, videos, ranked):  # numpy, written apart from training.metrics
    ranked = np.array(ranked)
    targets, nexts, videos = np.array(targets), np.array(nexts, dtype=object), np.array(videos)
    out = {}
    for k in (1, 2, 3):
        top = ranked[:, :k]
        hit = (top == targets[:, None]).any(1)
        nxt = np.array([n is not None and n in row for n, row in zip(nexts, top, strict=True)])
        rel = nexts != None  # noqa: E711 (elementwise)
        out[f"SLAcc@{k}"] = hit.mean() * 100
        out[f"VLAcc@{k}"] = np.mean([hit[videos == v].mean() for v in np.unique(videos)]) * 100
        rhit = (hit | nxt)[rel]
        out[f"ReSLAcc@{k}"] = rhit.mean() * 100
        rv = videos[rel]
        out[f"ReVLAcc@{k}"] = np.mean([rhit[rv == v].mean() for v in np.unique(rv)]) * 100
    return out


@pytest.mark.data
@pytest.mark.parametrize("order", [1, 4])
def test_metrics_agree_with_an_independent_computation_on_the_real_split(
    annotations_path: Path, order: int
) -> None:
    data = load_annotations(annotations_path)
    prior = fit_final(data, PriorSettings(order=order))
    test = data.split("test")
    ranked = [rank_with_prior(prior, s) for s in test]
    ours = compute_metrics(
        [Scored(s.video, s.target, s.next_action, r) for s, r in zip(test, ranked, strict=True)]
    )
    theirs = _independent(
        [s.target for s in test], [s.next_action for s in test], [s.video for s in test], ranked
    )
    assert ours.samples == 57 and ours.relaxed_samples == 43
    for key in metric_keys():
        assert abs(ours.metrics[key] - theirs[key]) < 0.01, key
    # every relaxed percentage is a multiple of 1/43, as in the paper
    for k in (1, 2, 3):
        assert (
            abs(ours.metrics[f"ReSLAcc@{k}"] * 43 / 100 - round(ours.metrics[f"ReSLAcc@{k}"] * 43 / 100))
            < 0.01
        )
