"""QA metrics: SQuAD-normalised EM, token F1, precision and recall; per dataset, micro and macro.

Scoring follows the reference (seed-method section 4) with one change: nothing is rounded
before averaging. Per question, EM is the maximum over gold aliases, and (F1, precision,
recall) are those of the alias with the highest F1 (the first one on ties). `yes_no` and
`choice` questions compare one word (yes / no / maybe) or one option letter.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.vocab import ANSWER_TYPES, CHOICE_LETTERS

if TYPE_CHECKING:
    from offline_tools.datasets import QARecord

__all__ = [
    "Scores",
    "DatasetScores",
    "ScoreTable",
    "normalize_answer",
    "extract_yes_no",
    "extract_choice",
    "score",
    "score_line",
    "score_items",
    "score_records",
    "aggregate",
    "format_table",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# A gold or prediction that is one of these words only matches itself (no partial F1).
_SPECIAL = ("yes", "no", "noanswer")
_YES_NO_WORD = re.compile(r"\b(yes|no|maybe)\b")


@dataclass(frozen=True)
class Scores:
    """One question's scores, each in 0..1."""

    em: float
    f1: float
    precision: float
    recall: float


@dataclass(frozen=True)
class DatasetScores:
    """Means over `n` questions, each in 0..100 (unrounded)."""

    n: int
    em: float
    f1: float
    precision: float
    recall: float

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "em": self.em, "f1": self.f1, "precision": self.precision, "recall": self.recall}


@dataclass(frozen=True)
class ScoreTable:
    """Per-dataset means plus two overall rows, all in 0..100.

    Args:
        per_dataset: dataset name -> its means (sorted by name).
        overall_micro: the mean over every question (large datasets weigh more).
        overall_macro: the unweighted mean of the per-dataset means (the reference's domain score).
    """

    per_dataset: dict[str, DatasetScores] = field(default_factory=dict)
    overall_micro: DatasetScores = DatasetScores(0, 0.0, 0.0, 0.0, 0.0)
    overall_macro: DatasetScores = DatasetScores(0, 0.0, 0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `{"datasets": {name: {...}}, "overall_micro": {...}, "overall_macro": {...}}`."""
        return {
            "datasets": {name: scores.to_dict() for name, scores in self.per_dataset.items()},
            "overall_micro": self.overall_micro.to_dict(),
            "overall_macro": self.overall_macro.to_dict(),
        }


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace.

    A text that is exactly "a" after the first two steps is kept: it is an option letter.

    Example:
        >>> normalize_answer("The  Eiffel Tower!")
        'eiffel tower'
    """
    text = text.lower().translate(_PUNCTUATION)
    if text.strip() != "a":
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_scores(prediction: str, gold: str) -> tuple[float, float, float]:
    """(F1, precision, recall) of two already-normalised strings over whitespace tokens."""
    if (prediction in _SPECIAL or gold in _SPECIAL) and prediction != gold:
        return 0.0, 0.0, 0.0
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def extract_yes_no(prediction: str) -> str:
    """The yes/no/maybe word of a prediction: the whole answer if it is one, else its first such
    word, else the normalised prediction (which then matches no gold)."""
    normalised = normalize_answer(prediction)
    match = _YES_NO_WORD.search(normalised)
    return match.group(1) if match else normalised


def extract_choice(prediction: str, choices: Sequence[str] | None = None) -> str:
    """The option letter of a prediction: "B", "b", "(B)", "B. text", "Answer: B" give "B"; a
    prediction equal to one option's text (normalised) gives that option's letter; else "".

    Only the generated answer is read, never the prompt (the reference scanned the prompt too).
    """
    stripped = prediction.strip()
    letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS
    if len(stripped) == 1 and stripped.upper() in letters:
        return stripped.upper()
    match = re.match(rf"^\s*(?:answer\s*(?:is)?\s*[:\-]?\s*)?\(?([{letters}])\b", stripped, re.IGNORECASE)
    if match and (match.group(1).isupper() or stripped.lower().startswith("answer")):
        return match.group(1).upper()
    if choices:
        normalised = normalize_answer(stripped)
        for index, choice in enumerate(choices):
            if normalised and normalised == normalize_answer(choice):
                return letters[index]
    return ""


def score(
    prediction: str, answers: Sequence[str], answer_type: str = "short", choices: Sequence[str] | None = None
) -> Scores:
    """Score one prediction against its gold aliases.

    Args:
        prediction: the model's answer text.
        answers: gold aliases (a plain string is one alias).
        answer_type: "short", "yes_no" or "choice".
        choices: option texts of a choice question (lets an answer given as option text count).

    Returns:
        `Scores` in 0..1. For yes_no/choice all four are 1.0 or 0.0.

    Example:
        >>> score("the Eiffel Tower", ["Eiffel Tower", "Tour Eiffel"]).em
        1.0
    """
    golds = [answers] if isinstance(answers, str) else list(answers)
    if not golds:
        raise ValueError("no gold answers to score against")
    if answer_type == "yes_no":
        word = extract_yes_no(prediction)
        hit = float(any(word == normalize_answer(gold) for gold in golds))
        return Scores(hit, hit, hit, hit)
    if answer_type == "choice":
        letter = extract_choice(prediction, choices)
        hit = float(bool(letter) and any(letter == gold.strip().upper() for gold in golds))
        return Scores(hit, hit, hit, hit)
    if answer_type != "short":
        raise ValueError(f"answer_type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")
    normalised = normalize_answer(prediction)
    em = 0.0
    best = (-1.0, 0.0, 0.0)
    for gold in golds:
        gold_normalised = normalize_answer(gold)
        em = max(em, float(normalised == gold_normalised))
        candidate = _token_scores(normalised, gold_normalised)
        if candidate[0] > best[0]:  # strict: ties keep the first alias
            best = candidate
    return Scores(em, best[0], best[1], best[2])


def score_line(line: dict[str, Any]) -> Scores:
    """Score one prediction line as `regrad evaluate` writes it (`answer`, `gold`, optional
    `answer_type` and `choices`), from its answer: a stored `scores` is not read."""
    gold = line["gold"] if isinstance(line["gold"], list) else [line["gold"]]
    return score(line["answer"] or "", gold, line.get("answer_type", "short"), line.get("choices"))


def score_items(pairs: Iterable[tuple[str, QARecord]]) -> list[tuple[str, Scores]]:
    """Score `(prediction, record)` pairs (records: `QARecord` or `AugmentedRecord`).

    Returns:
        `(dataset, Scores)` per pair, in order, ready for `aggregate`.
    """
    return [
        (record.dataset, score(prediction, record.answers, record.answer_type, record.choices))
        for prediction, record in pairs
    ]


def score_records(pairs: Iterable[tuple[str, QARecord]]) -> ScoreTable:
    """Score `(prediction, record)` pairs and aggregate them into a `ScoreTable`."""
    return aggregate(score_items(pairs))


def _means(rows: list[Scores]) -> DatasetScores:
    n = len(rows)
    if n == 0:
        return DatasetScores(0, 0.0, 0.0, 0.0, 0.0)
    return DatasetScores(
        n=n,
        em=100.0 * sum(r.em for r in rows) / n,
        f1=100.0 * sum(r.f1 for r in rows) / n,
        precision=100.0 * sum(r.precision for r in rows) / n,
        recall=100.0 * sum(r.recall for r in rows) / n,
    )


def aggregate(items: Iterable[tuple[str, Scores]]) -> ScoreTable:
    """Per-dataset means and the overall micro and macro means, in 0..100, never rounded.

    Args:
        items: `(dataset, Scores)` pairs, e.g. from `score_items`.

    Returns:
        A `ScoreTable`; with no items every mean is 0.0 and n is 0.
    """
    by_dataset: dict[str, list[Scores]] = {}
    everything: list[Scores] = []
    for dataset, scores in items:
        by_dataset.setdefault(dataset, []).append(scores)
        everything.append(scores)
    per_dataset = {name: _means(rows) for name, rows in sorted(by_dataset.items())}
    means = list(per_dataset.values())
    k = len(means)
    macro = DatasetScores(
        n=len(everything),
        em=sum(m.em for m in means) / k if k else 0.0,
        f1=sum(m.f1 for m in means) / k if k else 0.0,
        precision=sum(m.precision for m in means) / k if k else 0.0,
        recall=sum(m.recall for m in means) / k if k else 0.0,
    )
    return ScoreTable(per_dataset=per_dataset, overall_micro=_means(everything), overall_macro=macro)


def format_table(table: ScoreTable) -> str:
    """A fixed-width text table: one row per dataset, then `overall (micro)` and `overall (macro)`.

    Example output::

        dataset               n      EM      F1    prec  recall
        hotpotqa            111   31.53   42.10   44.02   43.77
        ...
    """
    rows = [(name, s) for name, s in table.per_dataset.items()]
    rows += [("overall (micro)", table.overall_micro), ("overall (macro)", table.overall_macro)]
    width = max(len("dataset"), *(len(name) for name, _ in rows))
    header = f"{'dataset':<{width}}  {'n':>6}  {'EM':>6}  {'F1':>6}  {'prec':>6}  {'recall':>6}"
    lines = [header, "-" * len(header)]
    for index, (name, s) in enumerate(rows):
        if index == len(rows) - 2:
            lines.append("-" * len(header))
        lines.append(f"{name:<{width}}  {s.n:>6}  {s.em:>6.2f}  {s.f1:>6.2f}  {s.precision:>6.2f}  {s.recall:>6.2f}")
    return "\n".join(lines)
