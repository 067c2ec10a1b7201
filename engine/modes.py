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
        base: run the base model: the learner's LoRA switched off for this row only (in the same
            batch as adapted rows). The baselines a user without a learner would run.
    """

    retrieve: bool
    gradients: bool
    context: bool
    description: str
    base: bool = False

    def __post_init__(self) -> None:
        if self.base and self.gradients:
            raise ValueError("a base-model mode applies no gradients: the learner's LoRA is off")


MODES: dict[str, ModeSpec] = {
    "regrad": ModeSpec(True, True, False, "gradients of the top-k passages applied; blind prompt"),
    "regrad_context": ModeSpec(True, True, True, "gradients applied and the passages in the prompt"),
    "rag": ModeSpec(True, False, True, "the passages in the prompt; no gradients"),
    "closed_book": ModeSpec(False, False, False, "neither passages nor gradients"),
    "rag_base": ModeSpec(True, False, True, "the base model (learner's LoRA off) with the passages in the prompt",
                         base=True),
    "closed_book_base": ModeSpec(False, False, False, "the base model (learner's LoRA off); no passages",
                                 base=True),
}
MODE_NAMES: tuple[str, ...] = tuple(MODES)


def mode_spec(name: str) -> ModeSpec:
    """The spec of mode `name`; ValueError naming the known modes otherwise."""
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; expected one of {', '.join(MODE_NAMES)}") from None
