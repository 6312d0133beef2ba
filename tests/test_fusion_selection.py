from pathlib import Path

import pytest

from planner.actions import ACTIONS
from planner.prior import PriorSettings
from training.cholect50 import load_annotations
from training.fusion_selection import select_fusion_weight


@pytest.mark.data
def test_flat_engine_needs_the_prior_and_a_perfect_engine_does_not(annotations_path: Path) -> None:
    data = load_annotations(annotations_path)
    train = data.samples_of(data.train_videos)
    flat = {s.key: dict.fromkeys(ACTIONS, 0.0) for s in train}
    results = select_fusion_weight(data, flat, PriorSettings(), weights=(0.0, 0.5, 1.0))
    assert results[0].weight == 0.5  # any λ > 0 is the prior; the smaller one wins the tie
    assert results[0].report.metrics["SLAcc@1"] > results[-1].report.metrics["SLAcc@1"]
    assert results[-1].weight == 0.0

    perfect = {s.key: {a: (0.0 if a == s.target else -20.0) for a in ACTIONS} for s in train}
    results = select_fusion_weight(data, perfect, PriorSettings(), weights=(0.0, 1.0, 50.0))
    assert results[0].weight == 0.0 and results[0].report.metrics["SLAcc@1"] == 100.0
    assert results[-1].weight == 50.0  # a heavy prior drowns a perfect engine
