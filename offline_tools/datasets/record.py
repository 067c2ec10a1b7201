"""The one question record every dataset loader yields, whatever the file format."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.vocab import ANSWER_TYPES, CHOICE_LETTERS, AnswerType

__all__ = [
    "QARecord",
    "AnswerType",
    "ANSWER_TYPES",
    "CHOICE_LETTERS",
    "YES_NO_GOLDS",
    "dedupe",
    "choice_letter",
    "record_fields",
]

YES_NO_GOLDS = ("yes", "no", "maybe")  # "maybe": PubMedQA only (see docs/datasets.md)


def dedupe(values: Iterable[Any]) -> list[str]:
    """Strip, drop empties and duplicates, keep the first occurrence's position.

    Never `set()`: the first alias is the training target, so the order must not depend on the
    interpreter's hash seed (the reference's ComplexWebQuestions bug).

    Example:
        >>> dedupe(["Brazil", " Brasil", "Brazil", ""])
        ['Brazil', 'Brasil']
    """
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        if value is None:
            continue
        text = str(value).strip()
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def choice_letter(index: int) -> str:
    """0 -> "A", ..., 4 -> "E"; a `ValueError` outside that range."""
    if not 0 <= index < len(CHOICE_LETTERS):
        raise ValueError(f"option index {index} is outside 0..{len(CHOICE_LETTERS) - 1}")
    return CHOICE_LETTERS[index]


@dataclass
class QARecord:
    """One question with its gold answers.

    Args:
        id: the dataset's own question id (stable across runs; unique within a dataset).
        dataset: registry name of the dataset (`hotpotqa`, `medqa`, ...).
        question: the question text (for CaseHOLD: the opinion excerpt).
        answers: gold answers, all aliases, deterministic order; `answers[0]` is the training
            target. `yes_no`: one of "yes"/"no" ("maybe" for PubMedQA). `choice`: one letter "A".."E".
        answer_type: `short` (a phrase), `yes_no` or `choice` (an option letter).
        choices: option texts in letter order for `choice` questions, else None.
    """

    id: str
    dataset: str
    question: str
    answers: list[str]
    answer_type: AnswerType = "short"
    choices: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"`id` must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"`question` of {self.id!r} must be a non-empty string, got {self.question!r}")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"`answer_type` of {self.id!r} is {self.answer_type!r}; expected one of {ANSWER_TYPES}")
        if (
            not isinstance(self.answers, list)
            or not self.answers
            or not all(isinstance(a, str) and a for a in self.answers)
        ):
            raise ValueError(f"`answers` of {self.id!r} must be a non-empty list of strings, got {self.answers!r}")
        if self.answer_type == "yes_no" and self.answers[0] not in YES_NO_GOLDS:
            raise ValueError(f"yes/no gold of {self.id!r} is {self.answers[0]!r}; expected one of {YES_NO_GOLDS}")
        if self.answer_type == "choice":
            self._check_choices()
        elif self.choices is not None:
            raise ValueError(f"`choices` of {self.id!r} is set but `answer_type` is {self.answer_type!r}")

    def _check_choices(self) -> None:
        if not isinstance(self.choices, list) or not 2 <= len(self.choices) <= len(CHOICE_LETTERS):
            raise ValueError(
                f"`choices` of {self.id!r} must list 2..{len(CHOICE_LETTERS)} option texts, got {self.choices!r}"
            )
        letters = list(CHOICE_LETTERS[: len(self.choices)])
        if self.answers[0] not in letters:
            raise ValueError(f"choice gold of {self.id!r} is {self.answers[0]!r}; expected one of {letters}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record (key order = field order)."""
        return {
            "id": self.id,
            "dataset": self.dataset,
            "question": self.question,
            "answers": list(self.answers),
            "answer_type": self.answer_type,
            "choices": list(self.choices) if self.choices is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QARecord:
        """Build from `to_dict()` output; `KeyError`/`ValueError`/`TypeError` name what is wrong."""
        return cls(**record_fields(data))


def record_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The QARecord keyword arguments in `data` (shared with AugmentedRecord), checked for presence."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object, got {type(data).__name__}")
    missing = [key for key in ("id", "dataset", "question", "answers") if key not in data]
    if missing:
        raise KeyError(f"missing field(s) {missing}")
    choices = data.get("choices")
    return {
        "id": data["id"],
        "dataset": data["dataset"],
        "question": data["question"],
        "answers": list(data["answers"]) if isinstance(data["answers"], list) else data["answers"],
        "answer_type": data.get("answer_type", "short"),
        "choices": list(choices) if isinstance(choices, list) else choices,
    }
