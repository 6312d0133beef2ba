import pytest

from planner.exceptions import UnknownActionError
from planner.memory import NHFMemory


def test_clip_events_move_the_current_action_into_distant_history() -> None:
    m = NHFMemory()
    assert m.current_action is None and m.history == ()
    m = m.start_clip("Tissue Retraction", 0.0).start_clip("Dissection", 12.0)
    assert m.distant == ("Tissue Retraction",)
    assert m.current_action == "Dissection"
    assert m.near is not None and m.near.start_s == 12.0
    assert m.history == ("Tissue Retraction", "Dissection")


def test_memory_is_immutable_snapshots() -> None:
    before = NHFMemory().start_clip("Dissection")
    after = before.start_clip("Coagulation").with_caption("bipolar on the liver bed")
    assert before.current_action == "Dissection" and before.near is not None and before.near.caption is None
    assert after.near is not None and after.near.caption == "bipolar on the liver bed"


def test_distant_history_is_bounded_and_counts_what_it_dropped() -> None:
    m = NHFMemory(max_distant=3)
    labels = ["Dissection", "Coagulation", "Dissection", "Tissue Retraction", "Dissection", "Vessel Clipping"]
    for label in labels:
        m = m.start_clip(label)
    assert m.distant == ("Dissection", "Tissue Retraction", "Dissection")
    assert m.dropped_distant == 2
    assert m.current_action == "Vessel Clipping"


def test_keyframes_are_thinned_evenly_keeping_first_and_last() -> None:
    m = NHFMemory(max_keyframes=3).start_clip("Dissection").with_keyframes(list(range(10)))
    assert m.near is not None
    assert m.near.keyframes == (0, 4, 9)


def test_from_history_matches_a_planning_sample() -> None:
    m = NHFMemory.from_history(["Dissection", "Tissue Retraction"], "Coagulation", caption="c")
    assert m.history == ("Dissection", "Tissue Retraction", "Coagulation")
    empty = NHFMemory.from_history([], None)
    assert empty.current_action is None and empty.history == ()


def test_labels_are_checked() -> None:
    with pytest.raises(UnknownActionError, match="'Suturing'"):
        NHFMemory().start_clip("Suturing")
    with pytest.raises(ValueError, match="max_distant"):
        NHFMemory(max_distant=0)
