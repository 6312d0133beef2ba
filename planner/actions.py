"""The closed action vocabulary and the mapping from free text to labels.

Only the five CholecT50-SAP actions are labels. Free text (a model's answer, a teacher's
response, a hand-written timeline) maps to a label through exact names, synonyms and word
stems; text that names no action, or more than one, maps to ``None``: never a guess.
"""

from __future__ import annotations

import re
from typing import Final

ASPIRATION: Final = "Aspiration"
COAGULATION: Final = "Coagulation"
DISSECTION: Final = "Dissection"
TISSUE_RETRACTION: Final = "Tissue Retraction"
VESSEL_CLIPPING: Final = "Vessel Clipping"

#: The vocabulary in its canonical order (alphabetical, as in the paper's tables).
ACTIONS: Final[tuple[str, ...]] = (
    ASPIRATION,
    COAGULATION,
    DISSECTION,
    TISSUE_RETRACTION,
    VESSEL_CLIPPING,
)

#: Option letters of the scoring prompt, one per action in canonical order.
OPTION_LETTERS: Final[tuple[str, ...]] = ("A", "B", "C", "D", "E")

# Whole phrases (after normalisation) that name exactly one action.
_SYNONYMS: Final[dict[str, str]] = {
    "aspiration": ASPIRATION,
    "aspirate": ASPIRATION,
    "aspirating": ASPIRATION,
    "suction": ASPIRATION,
    "suctioning": ASPIRATION,
    "irrigation": ASPIRATION,
    "irrigation and suction": ASPIRATION,
    "suction irrigation": ASPIRATION,
    "coagulation": COAGULATION,
    "coagulate": COAGULATION,
    "coagulating": COAGULATION,
    "cauterization": COAGULATION,
    "cauterisation": COAGULATION,
    "cautery": COAGULATION,
    "electrocautery": COAGULATION,
    "electrocoagulation": COAGULATION,
    "hemostasis": COAGULATION,
    "haemostasis": COAGULATION,
    "dissection": DISSECTION,
    "dissect": DISSECTION,
    "dissecting": DISSECTION,
    "tissue retraction": TISSUE_RETRACTION,
    "retraction": TISSUE_RETRACTION,
    "retract": TISSUE_RETRACTION,
    "retracting": TISSUE_RETRACTION,
    "retract tissue": TISSUE_RETRACTION,
    "grasping": TISSUE_RETRACTION,
    "vessel clipping": VESSEL_CLIPPING,
    "clipping": VESSEL_CLIPPING,
    "clip": VESSEL_CLIPPING,
    "clip vessel": VESSEL_CLIPPING,
    "clip the vessel": VESSEL_CLIPPING,
    "vessel clip": VESSEL_CLIPPING,
    "ligation": VESSEL_CLIPPING,
}

# Word stems that point at one action when they appear inside longer text.
_STEMS: Final[dict[str, tuple[str, ...]]] = {
    ASPIRATION: ("aspirat", "suction", "irrigat"),
    COAGULATION: ("coagul", "cauter", "hemosta", "haemosta"),
    DISSECTION: ("dissect",),
    TISSUE_RETRACTION: ("retract", "grasp"),
    VESSEL_CLIPPING: ("clip", "ligat"),
}

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize_text(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


def to_label(text: str) -> str | None:
    """Map free text to one action label, or ``None`` when it names none or several.

    >>> to_label("tissue-retraction")
    'Tissue Retraction'
    >>> to_label("Clip the cystic artery")
    'Vessel Clipping'
    >>> to_label("dissect, then coagulate") is None
    True
    """
    norm = normalize_text(text)
    if not norm:
        return None
    for label in ACTIONS:
        if norm == normalize_text(label):
            return label
    if norm in _SYNONYMS:
        return _SYNONYMS[norm]
    words = norm.split()
    found = {label for label, stems in _STEMS.items() for w in words for s in stems if w.startswith(s)}
    if len(found) == 1:
        return found.pop()
    return None


def is_label(text: str) -> bool:
    """True when ``text`` is exactly one of the five labels (canonical spelling)."""
    return text in ACTIONS


def option_letter(action: str) -> str:
    """The scoring prompt's letter for an action (``A`` for Aspiration, ...)."""
    return OPTION_LETTERS[ACTIONS.index(action)]
