import json
import math
from pathlib import Path

import pytest

from planner.actions import ACTIONS
from planner.exceptions import PriorFileError
from planner.prior import PriorSettings, SequencePrior, packaged_prior

SEQS = [
    ["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection", "Coagulation"],
    ["Tissue Retraction", "Dissection", "Vessel Clipping", "Dissection", "Tissue Retraction"],
    ["Tissue Retraction", "Dissection", "Coagulation", "Aspiration"],
]


@pytest.mark.parametrize("method", ["backoff", "interpolated"])
def test_distribution_is_a_full_positive_distribution(method: str) -> None:
    prior = SequencePrior.fit(SEQS, PriorSettings(order=3, method=method, min_count=1))  # type: ignore[arg-type]
    for history in [(), ("Dissection",), ("Aspiration", "Aspiration"), ("Vessel Clipping", "Dissection")]:
        dist = prior.distribution(history)
        assert set(dist) == set(ACTIONS)
        assert math.isclose(sum(dist.values()), 1.0)
        assert all(p > 0 for p in dist.values())


def test_longer_context_decides_under_backoff() -> None:
    prior = SequencePrior.fit(SEQS, PriorSettings(order=3, method="backoff", min_count=1))
    # after (Tissue Retraction, Dissection): Vessel Clipping twice, Coagulation once
    dist = prior.next_action_scores(["Tissue Retraction", "Dissection"])
    assert max(dist, key=dist.__getitem__) == "Vessel Clipping"
    # after (Vessel Clipping, Dissection): Coagulation once, Tissue Retraction once, never Aspiration
    dist = prior.next_action_scores(["Vessel Clipping", "Dissection"])
    assert dist["Coagulation"] == dist["Tissue Retraction"] > dist["Aspiration"]


def test_current_action_is_excluded() -> None:
    prior = SequencePrior.fit(SEQS)
    scores = prior.next_action_scores(["Dissection"])
    assert scores["Dissection"] == 0.0
    assert math.isclose(sum(scores.values()), 1.0)
    assert prior.log_scores(["Dissection"])["Dissection"] == -math.inf


def test_repeats_in_history_collapse_when_configured() -> None:
    on = SequencePrior.fit(SEQS, PriorSettings(order=3, method="backoff", min_count=1, collapse_repeats=True))
    off = SequencePrior.fit(
        SEQS, PriorSettings(order=3, method="backoff", min_count=1, collapse_repeats=False)
    )
    hist = ["Tissue Retraction", "Dissection", "Dissection"]
    assert on.distribution(hist) == on.distribution(["Tissue Retraction", "Dissection"])
    assert off.distribution(hist) != on.distribution(hist)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    prior = SequencePrior.fit(SEQS, PriorSettings(order=2), trained_on=["VID01"])
    path = tmp_path / "prior.json"
    prior.save(path)
    again = SequencePrior.load(path)
    assert (
        again.settings == prior.settings and again.counts == prior.counts and again.trained_on == ("VID01",)
    )
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not an llm-sap sequence prior"),
        (
            '{"format": "llm-sap-sequence-prior", "version": 1, "settings": {"order": 0}, "counts": {}}',
            "order",
        ),
        (
            '{"format": "llm-sap-sequence-prior", "version": 1, "settings": {}, '
            '"counts": {"": {"Suturing": 1}}}',
            "Suturing",
        ),
    ],
)
def test_malformed_prior_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(PriorFileError, match=message):
        SequencePrior.load(path)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="order"):
        PriorSettings(order=0)
    with pytest.raises(ValueError, match="method"):
        PriorSettings(method="magic")  # type: ignore[arg-type]


def test_packaged_prior_loads_with_default_settings() -> None:
    prior = packaged_prior()
    assert prior.settings == PriorSettings()
    assert len(prior.trained_on) == 35
    assert json.loads(json.dumps(prior.to_dict()))["format"] == "llm-sap-sequence-prior"
