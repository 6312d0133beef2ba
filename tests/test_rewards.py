"""The GRPO rewards are pure functions of the answer text and the ground truth, in [0, 1]."""

from __future__ import annotations

import json
from typing import Any

import pytest

from training.rewards import (
    completion_text,
    correctness_reward,
    format_reward,
    trl_correctness_reward,
    trl_format_reward,
)


def _answer(
    *actions: str, progress: str = "Calot's triangle is open.", safety: str = "Mind the duct."
) -> str:
    return json.dumps(
        {
            "progress_assessment": progress,
            "safety_considerations": safety,
            "next_actions": [{"action": a, "rationale": f"why {a}"} for a in actions],
        }
    )


FULL = _answer("Dissection", "Coagulation", "Vessel Clipping")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FULL, 1.0),
        (f"Sure! Here is my answer:\n```json\n{FULL}\n```", 1.0),  # fenced, with prose around it
        (_answer("Dissection", "Coagulation"), 0.8),  # two valid actions
        (_answer("Dissection"), 0.6),
        (_answer("Dissection", "Coagulation", "Vessel Clipping", progress=""), 0.85),
        (_answer("Dissection", "Coagulation", "Vessel Clipping", progress="", safety=""), 0.7),
        (_answer("Dissection", "Suturing", "Coagulation"), 0.7),  # two valid, one unknown item: no 0.1
        (_answer("Dissection", "Dissection", "Coagulation"), 0.8),  # a repeat counts once
        ("", 0.0),
        ("I cannot help with that.", 0.0),
        ('{"progress_assessment": "fine", "next_actions": [', 0.0),  # truncated before any action
        ("Next actions:\n1. Dissection - plane exposed\n2. Coagulation\n3. Aspiration", 0.7),  # free text
    ],
)
def test_format_reward_grades_the_structure(text: str, expected: float) -> None:
    assert format_reward(text) == pytest.approx(expected)


def test_a_truncated_json_answer_earns_credit_for_the_complete_action_objects_only() -> None:
    text = FULL[: FULL.index("Coagulation") + 20]  # cut inside the second action object
    assert 0.0 < format_reward(text) < 1.0
    assert correctness_reward(text, "Dissection", None) == 1.0


@pytest.mark.parametrize("junk", [None, 3, 2.5, ["Dissection"], {"action": "Dissection"}, b"Dissection"])
def test_non_text_inputs_earn_zero(junk: Any) -> None:
    assert format_reward(junk) == 0.0
    assert correctness_reward(junk, "Dissection", "Coagulation") == 0.0


@pytest.mark.parametrize(
    ("ranked", "target", "next_action", "expected"),
    [
        (("Dissection", "Coagulation", "Aspiration"), "Dissection", "Coagulation", 1.0),
        (("Coagulation", "Dissection", "Aspiration"), "Dissection", "Coagulation", 0.5),  # next clip's first
        (("Aspiration", "Dissection", "Coagulation"), "Dissection", "Vessel Clipping", 0.25),
        (("Aspiration", "Coagulation", "Dissection"), "Dissection", None, 0.25),
        (("Aspiration", "Coagulation", "Vessel Clipping"), "Dissection", "Tissue Retraction", 0.0),
        (("Coagulation", "Aspiration"), "Dissection", "", 0.0),  # no next clip: "" is not an action
        (("Dissection", "Aspiration"), None, None, 0.0),  # no target: nothing to be right about
        (("Dissection", "Aspiration"), "", None, 0.0),
    ],
)
def test_correctness_is_graded(
    ranked: tuple[str, ...], target: Any, next_action: Any, expected: float
) -> None:
    assert correctness_reward(_answer(*ranked), target, next_action) == expected


def test_the_grades_are_ordered() -> None:
    target, nxt = "Dissection", "Coagulation"
    first = correctness_reward(_answer("Dissection", "Coagulation", "Aspiration"), target, nxt)
    next_first = correctness_reward(_answer("Coagulation", "Aspiration", "Dissection"), target, nxt)
    in_three = correctness_reward(_answer("Aspiration", "Vessel Clipping", "Dissection"), target, nxt)
    wrong = correctness_reward(_answer("Aspiration", "Vessel Clipping", "Tissue Retraction"), target, nxt)
    assert first > next_first > in_three > wrong == 0.0


def test_rewards_are_pure() -> None:
    assert [format_reward(FULL) for _ in range(3)] == [1.0] * 3
    assert [correctness_reward(FULL, "Dissection", None) for _ in range(3)] == [1.0] * 3


@pytest.mark.parametrize(
    ("completion", "text"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "chat"}], "chat"),
        (
            {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            "ab",
        ),
        ([{"role": "user", "content": "q"}], ""),
        ([], ""),
        (None, ""),
        (42, ""),
    ],
)
def test_completion_text_reads_trl_shapes(completion: Any, text: str) -> None:
    assert completion_text(completion) == text


def test_trl_wrappers_take_conversational_completions_and_dataset_columns() -> None:
    completions = [
        [{"role": "assistant", "content": _answer("Dissection", "Coagulation", "Aspiration")}],
        [{"role": "assistant", "content": _answer("Coagulation", "Aspiration", "Dissection")}],
        [{"role": "assistant", "content": "gibberish"}],
    ]
    columns = {"target": ["Dissection"] * 3, "next_action": ["Coagulation", "", None], "prompts": [None] * 3}
    assert trl_format_reward(completions, **columns) == [1.0, 1.0, 0.0]
    assert trl_correctness_reward(completions, **columns) == [1.0, 0.25, 0.0]
    assert trl_correctness_reward(["Dissection"]) == [0.0]  # no target column: nothing is correct
