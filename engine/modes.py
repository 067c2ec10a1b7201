"""The answering modes, defined once: what each one retrieves, applies and puts in the prompt.

Everything else (the HTTP schema's `mode` field, the evaluation's `--mode`, the engine's stages)
reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModeSpec", "MODES", "MODE_NAMES", "mode_spec"]


@dataclass(frozen=True)
class ModeSpec:
    """What a mode does.

    Args:
        retrieve: search the top-k passages for the question.
        gradients: sum the passages' gradients and apply them (scaled by gamma) to the adapter.
        context: put the passages' text in the prompt.
        description: one line for `--help` and the API docs.
    """

    retrieve: bool
    gradients: bool
    context: bool
    description: str


MODES: dict[str, ModeSpec] = {
    "regrad": ModeSpec(True, True, False, "gradients of the top-k passages applied; blind prompt"),
    "regrad_context": ModeSpec(True, True, True, "gradients applied and the passages in the prompt"),
    "rag": ModeSpec(True, False, True, "the passages in the prompt; no gradients"),
    "closed_book": ModeSpec(False, False, False, "neither passages nor gradients"),
}
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def mode_spec(name: str) -> ModeSpec:
    """The spec of mode `name`; ValueError naming the known modes otherwise."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; expected one of {', '.join(MODE_NAMES)}") from None
