"""Scores by kind of question: yes/no apart from short answers, and a learner's yes/no habit beside
the set's.

HotpotQA and 2Wiki ask comparison questions ("Are X and Y both ...?") as short answers whose gold
is "yes" or "no". Their share and skew differ by set (HotpotQA's held-out 87: 10 yes/no, 9 of them
"no"; 2Wiki's first 60: 7, 5 of them "yes"), so a learner that answers "no" by habit gains on one set
and loses on the other, whatever it reads. Scored apart, the short answers say how well it reads,
and the yes/no rows show its habit (how often it says "yes") against the golds. HotpotQA's metric
gives "No, they are not" nothing against "no"; the yes/no rows also count the answers whose first
yes/no word is the gold's (`word_right`), which is how a reader would take a sentence.

    kinds = kinds_of(predictions)          # mode -> dataset -> kind -> KindScores
    print(format_kinds(kinds))             # "" when no question is yes/no

A question is `yes/no` when its answer type is `yes_no` or every gold alias is "yes" or "no";
`choice` when its answer type is `choice`; else `short`. Each line is scored with `metrics.score_line`,
as the main table is; a short answer counts as *answered* at token F1 ≥ 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from offline_tools.evaluation.metrics import extract_yes_no, normalize_answer, score_line

__all__ = ["KINDS", "ANSWERED_F1", "KindScores", "question_kind", "kinds_of", "kinds_to_dict", "format_kinds"]

KINDS = ("short", "yes/no", "choice")
ANSWERED_F1 = 0.5   # a short answer at this token F1 or above counts as answered
_YES_NO = {"yes", "no"}


def question_kind(gold: Sequence[str] | str, answer_type: str = "short") -> str:
    """`yes/no`, `choice` or `short` (see the module docstring).

    Example:
        >>> question_kind(["No"]), question_kind(["Salvia"]), question_kind(["maybe"], "yes_no")
        ('yes/no', 'short', 'yes/no')
    """
    if answer_type == "yes_no":
        return "yes/no"
    if answer_type == "choice":
        return "choice"
    golds = [gold] if isinstance(gold, str) else list(gold)
    if golds and all(normalize_answer(g) in _YES_NO for g in golds):
        return "yes/no"
    return "short"


@dataclass(frozen=True)
class KindScores:
    """One kind of question of one dataset in one mode.

    Args:
        n: questions.
        em, f1: means in 0..100, as the main table's.
        answered: questions with token F1 ≥ `ANSWERED_F1` (for yes/no and choice: the right ones).
        gold_yes: yes/no questions whose gold is "yes" (0 for other kinds).
        said_yes: yes/no questions answered "yes" (the first yes/no word of the answer).
        word_right: yes/no questions whose answer's first yes/no word is the gold.
    """

    n: int
    em: float
    f1: float
    answered: int
    gold_yes: int = 0
    said_yes: int = 0
    word_right: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "em": self.em, "f1": self.f1, "answered": self.answered, "gold_yes": self.gold_yes,
                "said_yes": self.said_yes, "word_right": self.word_right}


def kinds_of(predictions: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, KindScores]]]:
    """mode -> dataset -> kind -> `KindScores`, from prediction lines as `regrad evaluate` writes them
    (`mode`, `dataset`, `answer`, `gold`, optional `answer_type` and `choices`). Modes keep their order
    of first appearance; datasets are sorted; kinds follow `KINDS`."""
    rows: dict[str, dict[str, dict[str, list[tuple[float, float, bool, bool, bool]]]]] = {}
    for line in predictions:
        gold = line["gold"] if isinstance(line["gold"], list) else [line["gold"]]
        scores = score_line(line)
        kind = question_kind(gold, line.get("answer_type", "short"))
        word = extract_yes_no(line["answer"] or "") if kind == "yes/no" else None
        gold_yes = kind == "yes/no" and normalize_answer(gold[0]) == "yes"
        word_right = kind == "yes/no" and any(word == normalize_answer(g) for g in gold)
        by_dataset = rows.setdefault(line["mode"], {}).setdefault(line["dataset"], {})
        by_dataset.setdefault(kind, []).append((scores.em, scores.f1, gold_yes, word == "yes", word_right))
    return {
        mode: {
            dataset: {kind: _summary(by_kind[kind]) for kind in KINDS if kind in by_kind}
            for dataset, by_kind in sorted(by_dataset.items())
        }
        for mode, by_dataset in rows.items()
    }


def _summary(rows: list[tuple[float, float, bool, bool, bool]]) -> KindScores:
    n = len(rows)
    return KindScores(
        n=n,
        em=100.0 * sum(r[0] for r in rows) / n,
        f1=100.0 * sum(r[1] for r in rows) / n,
        answered=sum(1 for r in rows if r[1] >= ANSWERED_F1),
        gold_yes=sum(1 for r in rows if r[2]),
        said_yes=sum(1 for r in rows if r[3]),
        word_right=sum(1 for r in rows if r[4]),
    )


def kinds_to_dict(kinds: dict[str, dict[str, dict[str, KindScores]]]) -> dict[str, Any]:
    """JSON-ready, for scores.json's `kinds`."""
    return {
        mode: {dataset: {kind: s.to_dict() for kind, s in by_kind.items()} for dataset, by_kind in by_dataset.items()}
        for mode, by_dataset in kinds.items()
    }


def format_kinds(kinds: dict[str, dict[str, dict[str, KindScores]]]) -> str:
    """A fixed-width table of every dataset that has yes/no questions, one row per kind; "" when no
    dataset has any (the main table then says it all)."""
    rows = [(mode, dataset, kind, s) for mode, by_dataset in kinds.items() for dataset, by_kind in by_dataset.items()
            if "yes/no" in by_kind for kind, s in by_kind.items()]
    if not rows:
        return ""
    mode_width = max(len("mode"), *(len(r[0]) for r in rows))
    name_width = max(len("dataset"), *(len(r[1]) for r in rows))
    header = (f"{'mode':<{mode_width}}  {'dataset':<{name_width}}  {'kind':<6}  {'n':>5}  {'EM':>6}  {'F1':>6}  "
              f"{'answered':>8}  {'word right':>10}  said/gold yes")
    lines = [f"by kind (answered: F1 >= {ANSWERED_F1}; word right: the answer's first yes/no word is the gold; "
             "said/gold yes: answers \"yes\" against golds \"yes\")", header, "-" * len(header)]
    for mode, dataset, kind, s in rows:
        word, habit = (f"{s.word_right}", f"{s.said_yes} / {s.gold_yes}") if kind == "yes/no" else ("", "")
        lines.append(f"{mode:<{mode_width}}  {dataset:<{name_width}}  {kind:<6}  {s.n:>5}  {s.em:>6.2f}  "
                     f"{s.f1:>6.2f}  {s.answered:>8}  {word:>10}  {habit}".rstrip())
    return "\n".join(lines)
