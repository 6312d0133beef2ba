"""Option-letter scoring shared by every model engine (pure: no torch, no IO).

An engine shows the five actions as lettered options A-E, reads the next-token log-probs of the
five letters, and turns them into action log-scores. Position bias: the same question is asked
with several fixed letter orders and the per-action log-probs are averaged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from planner.actions import ACTIONS, OPTION_LETTERS
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.prompts import APPrompts, Prompt, Variant

#: Log-prob given to a letter a server did not list among its top log-probs.
DEFAULT_FLOOR = -30.0


def option_orders(count: int) -> list[tuple[str, ...]]:
    """``count`` distinct, deterministic action orders: the cyclic shifts first, then permutations."""
    if not 1 <= count <= math.factorial(len(ACTIONS)):
        raise ValueError(f"option order count must be in 1..{math.factorial(len(ACTIONS))}, got {count}")
    n = len(ACTIONS)
    orders = [ACTIONS[i:] + ACTIONS[:i] for i in range(min(count, n))]
    seen = set(orders)
    for perm in itertools.permutations(ACTIONS):
        if len(orders) >= count:
            break
        if perm not in seen:
            orders.append(perm)
            seen.add(perm)
    return orders


def scoring_prompts(memory: NHFMemory, variant: Variant, count: int) -> list[Prompt]:
    """The option-scoring prompts, one per letter order."""
    return [APPrompts.options(memory, variant, order) for order in option_orders(count)]


def restricted_log_softmax(letter_logprobs: Mapping[str, float]) -> dict[str, float]:
    """Renormalise log-probs over the five letters only (natural log)."""
    values = [letter_logprobs[letter] for letter in OPTION_LETTERS]
    top = max(values)
    if not math.isfinite(top):
        raise ValueError(f"no finite option letter log-prob in {dict(letter_logprobs)}")
    norm = top + math.log(sum(math.exp(v - top) for v in values))
    return {letter: letter_logprobs[letter] - norm for letter in OPTION_LETTERS}


def action_scores(per_prompt: Sequence[Mapping[str, float]], prompts: Sequence[Prompt]) -> dict[str, float]:
    """Average each action's letter log-prob over the prompts (orders), renormalised over actions.

    ``per_prompt[i]`` maps letters to raw next-token log-probs for ``prompts[i]``.
    """
    if not prompts or len(per_prompt) != len(prompts):
        raise ValueError(f"need one letter score map per prompt, got {len(per_prompt)} for {len(prompts)}")
    totals = dict.fromkeys(ACTIONS, 0.0)
    for letters, prompt in zip(per_prompt, prompts, strict=True):
        for letter, logp in restricted_log_softmax(letters).items():
            totals[prompt.action_for(letter)] += logp
    mean = {a: v / len(prompts) for a, v in totals.items()}
    top = max(mean.values())
    norm = top + math.log(sum(math.exp(v - top) for v in mean.values()))
    return {a: v - norm for a, v in mean.items()}


def letters_from_top_logprobs(top: Mapping[str, float], floor: float = DEFAULT_FLOOR) -> dict[str, float]:
    """Letter log-probs from a server's top-k map (token text -> log-prob).

    Only the exact letter tokens count (``"A"``, as the transformers engine reads them; not
    ``" A"``). A letter missing from the top-k gets ``floor``, lowered below the smallest listed
    log-prob when needed, so a missing letter never outranks a listed one.
    """
    listed = [v for v in top.values() if math.isfinite(v)]
    floor = min([floor, *(v - 1.0 for v in listed)])
    return {
        letter: top[letter] if math.isfinite(top.get(letter, -math.inf)) else floor
        for letter in OPTION_LETTERS
    }


def letter_token_ids(tokenizer: Any, where: str = "") -> dict[str, int]:
    """The token id of each option letter; each letter must be exactly one token."""
    out: dict[str, int] = {}
    for letter in OPTION_LETTERS:
        ids = tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise EngineError(
                f"option letter {letter!r} is {len(ids)} tokens {ids} in the tokenizer of {where}"
            )
        out[letter] = int(ids[0])
    return out
