"""What ``llm-sap sft --help`` and ``grpo --help`` say about their config keys, and the check that
the required ones are set, made before torch, transformers or TRL is imported."""

from __future__ import annotations

from pydantic import BaseModel

from training.trainer_common import RecipeError


def keys_epilog(model: type[BaseModel], section: str, required: tuple[str, ...], example: str) -> str:
    """``config keys ([training.sft]; ...): model (required), epochs=50.0, ...`` for the help."""
    parts = []
    for name, field in model.model_fields.items():
        if name in required or any(name in alt.split("|") for alt in required):
            parts.append(f"{name} (required)")
        elif isinstance(field.default, BaseModel):
            sub = ", ".join(f"{k}={v!r}" for k, v in field.default.model_dump().items())
            parts.append(f"{name}.{{{sub}}}")
        else:
            parts.append(f"{name}={field.default!r}")
    return (
        f"config keys ([{section}] in a --config TOML file, or --set {section}.KEY=VALUE; "
        f"example: {example}; reference: training/recipes.py): " + ", ".join(parts)
    )


def check_required(recipe: BaseModel, section: str, required: tuple[str, ...]) -> None:
    """One line naming every empty required key (``a|b``: one of them)."""
    missing = [alt for alt in required if not any(getattr(recipe, k) for k in alt.split("|"))]
    if missing:
        names = ", ".join(" or ".join(f"{section}.{k}" for k in alt.split("|")) for alt in missing)
        raise RecipeError(f"config keys not set: {names} (give --config FILE or --set KEY=VALUE; see --help)")
