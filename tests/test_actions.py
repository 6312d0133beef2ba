import pytest

from planner.actions import ACTIONS, OPTION_LETTERS, option_letter, to_label


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Dissection", "Dissection"),
        ("  tissue-retraction. ", "Tissue Retraction"),
        ("TISSUE RETRACTION", "Tissue Retraction"),
        ("suction", "Aspiration"),
        ("Irrigation and suction", "Aspiration"),
        ("electrocautery", "Coagulation"),
        ("Clip the cystic artery", "Vessel Clipping"),
        ("clipping", "Vessel Clipping"),
        ("retract the gallbladder fundus", "Tissue Retraction"),
        ("continue dissecting Calot's triangle", "Dissection"),
    ],
)
def test_free_text_maps_to_its_label(text: str, label: str) -> None:
    assert to_label(text) == label


@pytest.mark.parametrize("text", ["", "   ", "Suturing", "dissect then coagulate", "retract or clip", "42"])
def test_text_naming_no_action_or_several_is_none(text: str) -> None:
    assert to_label(text) is None


def test_every_label_maps_to_itself_and_has_a_letter() -> None:
    assert len(ACTIONS) == 5
    for action in ACTIONS:
        assert to_label(action) == action
        assert to_label(action.lower()) == action
    assert [option_letter(a) for a in ACTIONS] == list(OPTION_LETTERS)
