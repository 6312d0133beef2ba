import copy
import json
from pathlib import Path

import pytest

from training.cholect50 import TEST_VIDEOS, load_annotations, parse_annotations
from training.exceptions import AnnotationError

SAMPLE_CLIP = {
    "Action": "Dissection",
    "Action_Reg": "Dissection",
    "Frame_id": 40,
    "Test": True,
    "Distant Actions": ["Tissue Retraction"],
    "Nearest Action": "Coagulation",
    "History": [0, 20],
    "Near Frames": ["VID01/000020.png"],
    "Next Action": "",
}
TINY = {
    "VID01": {
        "0": {"Action": "Tissue Retraction", "Action_Reg": "Tissue Retraction", "Frame_id": 0, "Test": False},
        "1": {"Action": "Coagulation", "Action_Reg": "Inexistence", "Frame_id": 20, "Test": False},
        "2": SAMPLE_CLIP,
    }
}


def test_tiny_file_parses() -> None:
    data = parse_annotations(TINY)
    (sample,) = data.samples
    assert sample.history == ("Tissue Retraction", "Coagulation")
    assert sample.next_action is None and sample.target == "Dissection"
    assert data.videos["VID01"][1].action_reg is None  # "Inexistence" names no action


def _broken(video: str, clip: str, field: str, value: object) -> dict[str, object]:
    raw = copy.deepcopy(TINY)
    if value is KeyError:
        del raw[video][clip][field]
    else:
        raw[video][clip][field] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            _broken("VID01", "2", "Action", "Suturing"),
            "VID01 clip 2: field 'Action': 'Suturing' is not an action label",
        ),
        (_broken("VID01", "1", "Frame_id", "x"), "VID01 clip 1: field 'Frame_id'"),
        (_broken("VID01", "2", "Next Action", KeyError), "VID01 clip 2: field 'Next Action' is missing"),
        (
            _broken("VID01", "2", "Distant Actions", ["Dissection", 3]),
            "VID01 clip 2: field 'Distant Actions': 3",
        ),
        (_broken("VID01", "2", "Test", "yes"), "VID01 clip 2: field 'Test'"),
        (_broken("VID01", "1", "Action", "Tissue Retraction"), "VID01 clip 1: field 'Action'"),
        ({"VID01": {"0": TINY["VID01"]["0"], "2": SAMPLE_CLIP}}, "VID01: clip keys are not contiguous"),
        ({"clip": {}}, "video id 'clip'"),
        ([], "expected a non-empty object of videos"),
    ],
)
def test_malformed_annotations_name_video_clip_and_field(raw: object, message: str) -> None:
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(")):
        parse_annotations(raw)


def test_unreadable_files_are_annotation_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"VID01": ')
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_annotations(bad)


@pytest.mark.data
def test_real_file_has_the_papers_split(annotations_path: Path) -> None:
    data = load_annotations(annotations_path)
    assert len(data.videos) == 50
    assert len(data.samples) == 225
    assert set(data.test_videos) == set(TEST_VIDEOS)
    assert len(data.train_videos) == 35
    assert len(data.split("train")) == 168
    test = data.split("test")
    assert len(test) == 57
    assert sum(s.next_action is not None for s in test) == 43
    vid110 = next(s for s in data.samples if s.video == "VID110" and s.clip == "0")
    assert vid110.history == () and vid110.nearest is None


@pytest.mark.data
def test_real_history_comes_from_the_sample_not_the_clips(annotations_path: Path) -> None:
    data = load_annotations(annotations_path)
    raw = json.loads(annotations_path.read_text())
    differing = 0
    for s in data.samples:
        clips = data.videos[s.video]
        earlier = [c.action for c in clips if c.index < int(s.clip)]
        assert s.distant == tuple(raw[s.video][s.clip]["Distant Actions"])
        differing += tuple(earlier[:-1]) != s.distant
    assert differing == 58  # the data README: 58 samples use Action_Reg in their distant history
