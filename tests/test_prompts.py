from planner.actions import ACTIONS
from planner.knowledge_base import load_knowledge_base
from planner.memory import NHFMemory
from planner.prompts import APPrompts, DCPrompts, system_prompt


def _memory() -> NHFMemory:
    return NHFMemory.from_history(
        ["Tissue Retraction", "Dissection"], "Vessel Clipping", caption="clips on duct"
    )


def test_static_prefix_is_byte_identical_across_every_prompt_kind() -> None:
    m1 = _memory()
    m2 = NHFMemory().start_clip("Aspiration").with_keyframes(["f1.png", "f2.png"])
    prompts = [
        APPrompts.plan(m1),
        APPrompts.plan(m2, "direct"),
        APPrompts.options(m1),
        APPrompts.options(m2, "direct", order=list(reversed(ACTIONS))),
        DCPrompts.caption("frame.png"),
    ]
    systems = [p.messages[0] for p in prompts]
    assert all(s["role"] == "system" for s in systems)
    assert len({s["content"].encode() for s in systems}) == 1
    assert systems[0]["content"] == system_prompt()


def test_knowledge_base_is_in_the_system_prompt() -> None:
    kb = load_knowledge_base()
    text = system_prompt()
    assert "Critical view of safety" in text
    assert kb.surgical_process.strip() in text
    for action in ACTIONS:
        assert kb.actions[action].description in text
    assert 2500 < len(text) < 9000  # a few hundred tokens: worth caching, cheap to prefill


def test_indirect_prompt_carries_history_and_caption() -> None:
    user = APPrompts.plan(_memory()).messages[1]["content"]
    assert "Tissue Retraction, Dissection" in user
    assert "Current action (this clip): Vessel Clipping" in user
    assert "clips on duct" in user
    assert '"next_actions"' in user


def test_direct_prompt_carries_keyframes_as_images() -> None:
    m = NHFMemory().start_clip("Dissection").with_keyframes(["a.png", "b.png", "c.png"])
    parts = APPrompts.plan(m, "direct").messages[1]["content"]
    images = [p["image"] for p in parts if p["type"] == "image"]
    assert images == ["a.png", "b.png", "c.png"]


def test_option_prompt_letters_follow_the_requested_order() -> None:
    order = ["Vessel Clipping", "Aspiration", "Dissection", "Coagulation", "Tissue Retraction"]
    prompt = APPrompts.options(_memory(), order=order)
    assert prompt.options[0] == ("A", "Vessel Clipping")
    assert prompt.action_for("E") == "Tissue Retraction"
    assert "A. Vessel Clipping\nB. Aspiration" in prompt.messages[1]["content"]


def test_option_order_must_be_a_permutation() -> None:
    import pytest

    with pytest.raises(ValueError, match="permutation"):
        APPrompts.options(_memory(), order=["Dissection"] * 5)
