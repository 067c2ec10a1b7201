"""The answer vocabulary every layer shares: answer types and choice letters, defined here once.

The prompt builder (models/generate.py), the engine's `Question`, the HTTP schemas, the dataset records
and the metrics all import these; a new answer type is added here and then handled where it is used.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["AnswerType", "ANSWER_TYPES", "CHOICE_LETTERS", "MIN_CHOICES", "MAX_CHOICES"]

AnswerType = Literal["short", "yes_no", "choice"]
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)   # ("short", "yes_no", "choice")
CHOICE_LETTERS = "ABCDE"   # option i of a `choice` question is CHOICE_LETTERS[i]
MIN_CHOICES, MAX_CHOICES = 2, len(CHOICE_LETTERS)
