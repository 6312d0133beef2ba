"""Behavioural tests of planner.response on the messy answers planner models actually give."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.actions import ACTIONS
from planner.response import RankedAction, StructuredResponse, Unparseable, parse_response

CANONICAL = {
    "progress_assessment": "Calot's triangle is partly dissected.",
    "safety_considerations": "Achieve the critical view of safety before clipping.",
    "next_actions": [
        {"action": "Dissection", "rationale": "free the cystic duct"},
        {"action": "Tissue Retraction", "rationale": "expose the triangle"},
        {"action": "Vessel Clipping", "rationale": "once the CVS is reached"},
    ],
}

PAPER_STYLE = """Progress Assessment: The surgeon has completed exposure of the gallbladder.
Safety Considerations: Avoid thermal injury to the common bile duct.
Next Actions:
1. Dissection - continue separating the cystic duct
2. **Coagulation**: control bleeding from the liver bed
3) Tissue retraction — expose Calot's triangle
"""


def parsed(text: str) -> StructuredResponse:
    result = parse_response(text)
    assert isinstance(result, StructuredResponse), result
    return result


def test_canonical_json() -> None:
    r = parsed(json.dumps(CANONICAL))
    assert r.ranked_labels == ("Dissection", "Tissue Retraction", "Vessel Clipping")
    assert r.progress_assessment == "Calot's triangle is partly dissected."
    assert r.safety_considerations == "Achieve the critical view of safety before clipping."
    assert r.actions[1] == RankedAction("Tissue Retraction", "expose the triangle")
    assert r.complete and r.unknown_items == ()
    assert r.to_dict() == CANONICAL


def test_fenced_json_with_prose_around() -> None:
    text = f"Here is my plan.\n```json\n{json.dumps(CANONICAL, indent=2)}\n```\nLet me know!"
    assert parsed(text).ranked_labels == ("Dissection", "Tissue Retraction", "Vessel Clipping")


def test_json_inside_prose_without_fence() -> None:
    text = f"Sure, the answer is {json.dumps(CANONICAL)} and that is all."
    assert parsed(text).ranked_labels == ("Dissection", "Tissue Retraction", "Vessel Clipping")


def test_alternative_keys_and_string_list() -> None:
    text = json.dumps(
        {
            "Progress Assessment": "halfway",
            "safety": "watch the duct",
            "Next Actions": ["clip the cystic artery", "Aspiration - clear the field", "coagulate"],
        }
    )
    r = parsed(text)
    assert r.ranked_labels == ("Vessel Clipping", "Aspiration", "Coagulation")
    assert (r.progress_assessment, r.safety_considerations) == ("halfway", "watch the duct")
    assert r.actions[1].rationale == "clear the field"


@pytest.mark.parametrize("key", ["actions", "recommendations", "next_actions", "nextActions"])
def test_action_list_keys_and_item_keys(key: str) -> None:
    items = [
        {"name": "retraction", "reason": "lift the fundus"},
        {"label": "Dissection", "justification": "open the triangle"},
    ]
    r = parsed(json.dumps({"progressAssessment": "early", key: items}))
    assert r.actions == (
        RankedAction("Tissue Retraction", "lift the fundus"),
        RankedAction("Dissection", "open the triangle"),
    )
    assert r.progress_assessment == "early" and not r.complete


def test_broken_json_single_quotes_and_trailing_commas() -> None:
    text = "{'progress_assessment': 'ok', 'next_actions': [{'action': 'Dissection', 'rationale': 'go',},],}"
    assert parsed(text).actions == (RankedAction("Dissection", "go"),)


def test_json_rank_field_reorders() -> None:
    items = [{"action": "Coagulation", "rank": 2}, {"action": "Dissection", "rank": 1}]
    assert parsed(json.dumps({"next_actions": items})).ranked_labels == ("Dissection", "Coagulation")


def test_paper_free_text_style() -> None:
    r = parsed(PAPER_STYLE)
    assert r.progress_assessment == "The surgeon has completed exposure of the gallbladder."
    assert r.safety_considerations == "Avoid thermal injury to the common bile duct."
    assert r.actions == (
        RankedAction("Dissection", "continue separating the cystic duct"),
        RankedAction("Coagulation", "control bleeding from the liver bed"),
        RankedAction("Tissue Retraction", "expose Calot's triangle"),
    )
    assert r.complete


def test_markdown_headers_bullets_and_continuation_lines() -> None:
    text = """### PROGRESS ASSESSMENT
The duct is exposed.

### Safety considerations
- Confirm the critical view of safety
- Mind the right hepatic artery

### Recommended next actions
1. **Vessel Clipping**
   - Rationale: the cystic duct is fully exposed
2. **Dissection** (free the cystic artery)
3. **Aspiration**: clear blood from the field
"""
    r = parsed(text)
    assert r.progress_assessment == "The duct is exposed."
    assert "right hepatic artery" in r.safety_considerations
    assert r.actions == (
        RankedAction("Vessel Clipping", "the cystic duct is fully exposed"),
        RankedAction("Dissection", "free the cystic artery"),
        RankedAction("Aspiration", "clear blood from the field"),
    )


def test_bold_headings_and_bullet_items() -> None:
    text = (
        "**Progress Assessment:** the gallbladder is retracted\n"
        "**Safety Considerations:** avoid the duodenum\n"
        "**Next Actions:**\n- Dissection: free the peritoneum\n- Clip: the artery\n- Suction: clear smoke"
    )
    r = parsed(text)
    assert r.ranked_labels == ("Dissection", "Vessel Clipping", "Aspiration")
    assert r.progress_assessment == "the gallbladder is retracted"
    assert r.actions[0].rationale == "free the peritoneum"


def test_top_k_lines_without_actions_heading() -> None:
    text = (
        "Safety: keep away from the CBD\n"
        "Top-1: Dissection (open Calot)\nTop-2: Coagulation (ooze)\nTop-3: Clipping"
    )
    r = parsed(text)
    assert r.ranked_labels == ("Dissection", "Coagulation", "Vessel Clipping")
    assert r.safety_considerations == "keep away from the CBD"
    assert r.actions[0].rationale == "open Calot"


def test_rank_lines_are_reordered_by_their_numbers() -> None:
    r = parsed("Rank 2: Coagulation - stop the ooze\nRank 1: Dissection - continue\nRank 3: Aspiration")
    assert r.ranked_labels == ("Dissection", "Coagulation", "Aspiration")


def test_action_n_lines_and_inline_numbering() -> None:
    assert parsed("Action 1: Retraction\nAction 2: Dissection").ranked_labels == (
        "Tissue Retraction",
        "Dissection",
    )
    inline = parsed("Next actions: 1. Dissection, 2. Coagulation, 3. Vessel clipping")
    assert inline.ranked_labels == ("Dissection", "Coagulation", "Vessel Clipping")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Next action: Vessel Clipping", "Vessel Clipping"),
        ("Dissection", "Dissection"),
        ("**Tissue retraction**", "Tissue Retraction"),
        ("Final answer: aspiration", "Aspiration"),
    ],
)
def test_bare_answers(text: str, label: str) -> None:
    r = parsed(text)
    assert r.actions == (RankedAction(label, ""),)
    assert (r.progress_assessment, r.safety_considerations) == ("", "")
    assert not r.complete


def test_comma_list_of_labels() -> None:
    r = parsed("Dissection, Coagulation, Vessel Clipping")
    assert r.ranked_labels == ("Dissection", "Coagulation", "Vessel Clipping") and r.complete


def test_unknown_action_is_kept_not_guessed() -> None:
    r = parsed("Next Actions:\n1. Suturing - close the port\n2. Dissection - continue\n3. Coagulation")
    assert r.ranked_labels == ("Dissection", "Coagulation")
    assert r.unknown_items == ("Suturing",)
    assert not r.complete


def test_ambiguous_item_is_unknown() -> None:
    r = parsed("1. dissect then coagulate\n2. Aspiration")
    assert r.ranked_labels == ("Aspiration",)
    assert r.unknown_items == ("dissect then coagulate",)


def test_duplicates_keep_first_occurrence() -> None:
    r = parsed("1. Dissection - first\n2. Dissection - again\n3. Coagulation\n4. Aspiration")
    assert r.actions == (
        RankedAction("Dissection", "first"),
        RankedAction("Coagulation", ""),
        RankedAction("Aspiration", ""),
    )
    assert r.complete


def test_more_than_three_keeps_first_three() -> None:
    items = ["Aspiration", "Coagulation", "Dissection", "Tissue Retraction", "Vessel Clipping"]
    r = parsed(json.dumps({"next_actions": items}))
    assert r.ranked_labels == ("Aspiration", "Coagulation", "Dissection")


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_text_is_unparseable(text: str) -> None:
    assert parse_response(text) == Unparseable("empty response")


@pytest.mark.parametrize(
    "text",
    [
        "The weather is nice today.\nNothing surgical here.",
        "Progress Assessment: going well\nSafety Considerations: none",
        "Next Actions:\n1. Suturing\n2. Stapling",
        json.dumps({"next_actions": ["Suturing", "Stapling"]}),
        json.dumps({"next_actions": []}),
    ],
)
def test_text_without_labels_is_unparseable(text: str) -> None:
    result = parse_response(text)
    assert isinstance(result, Unparseable)
    assert result.reason and "\n" not in result.reason


def test_unparseable_reason_names_unknown_items() -> None:
    result = parse_response("Next Actions:\n1. Suturing\n2. Stapling")
    assert result == Unparseable("no action label found among ranked items: Suturing; Stapling")


@pytest.mark.parametrize("text", [json.dumps(CANONICAL), PAPER_STYLE, "Next Actions:\n1. Suturing\n2. Clip"])
def test_round_trip(text: str) -> None:
    r = parsed(text)
    assert parse_response(r.to_json()) == r


def test_to_json_keeps_unicode_and_unknown_items() -> None:
    r = StructuredResponse("état", "", (RankedAction("Dissection", "→ duct"),), ("Suturing",))
    assert '"état"' in r.to_json()
    assert json.loads(r.to_json())["unknown_items"] == ["Suturing"]
    assert parse_response(r.to_json()) == r


def test_models_reject_invalid_actions() -> None:
    with pytest.raises(ValueError):
        RankedAction("Suturing", "")
    with pytest.raises(ValueError):
        StructuredResponse("", "", ())
    with pytest.raises(ValueError):
        StructuredResponse("", "", (RankedAction("Dissection"), RankedAction("Dissection")))


_FRAGMENTS = st.sampled_from(
    [
        "Progress Assessment:",
        "### Safety considerations",
        "Next Actions:",
        "1. ",
        "2) ",
        "Top-1: ",
        "- ",
        "**",
        "```json\n",
        "```",
        "{",
        "}",
        '"next_actions": [',
        "]",
        ", ",
        " - ",
        "(",
        "Suturing",
        "\n",
        *ACTIONS,
        "clip",
        "dissect then coagulate",
    ]
)
_MESSY_TEXT = st.one_of(st.text(), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5))).map("".join))


def _check_valid(result: StructuredResponse | Unparseable) -> None:
    if isinstance(result, Unparseable):
        assert result.reason.strip() and "\n" not in result.reason
        return
    labels = result.ranked_labels
    assert 1 <= len(labels) <= 3
    assert len(set(labels)) == len(labels)
    assert all(label in ACTIONS for label in labels)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MESSY_TEXT)
def test_never_raises_and_returns_valid_labels(text: str) -> None:
    result = parse_response(text)
    _check_valid(result)
    if isinstance(result, StructuredResponse):
        assert parse_response(result.to_json()) == result


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(ACTIONS),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["next_actions", "action", "rationale", "rank", "progress", "safety", "x"]),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_never_raises(value: object) -> None:
    _check_valid(parse_response(json.dumps(value)))
