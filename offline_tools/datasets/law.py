"""Law loaders: LHF and HousingQA (yes/no), CaseHOLD (5 options).

No law data ships with this repository; these follow the published formats: ReGrad's prepared
`{split}.jsonl` (reference section 2) and each dataset's original release (LegalBench TSV for
LHF, RegLab's HousingQA questions, the CaseHOLD CSV), tested on small fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offline_tools.datasets.base import SPLITS, DatasetLoader, build_record, require, yes_no_gold
from offline_tools.datasets.readers import Where, iter_objects, iter_table
from offline_tools.datasets.record import CHOICE_LETTERS, QARecord, choice_letter

__all__ = ["LHF", "HousingQA", "CaseHOLD", "LHF_QUESTION", "HOUSINGQA_QUESTION"]

# The LegalBench release has a post and a label, no question; this wording is ours (docs/datasets.md).
LHF_QUESTION = (
    "Does this post discuss a family law issue, such as divorce, adoption, name change, guardianship, "
    "domestic violence or child custody?\nPost: {text}"
)
# HousingQA questions depend on the state; RegLab's prompts state it and the year of the law.
HOUSINGQA_QUESTION = "Consider statutory law for {state} in the year 2021. {question}"


def _line_id(where: Where) -> str:
    return str(where.line if where.line is not None else where.index)


class LHF(DatasetLoader):
    """LHF (LegalBench `learned_hands_family`): ReGrad `{split}.jsonl` `{question, answer}` or the
    LegalBench `{split}.tsv` with columns `index`, `text`, `answer` (Yes/No). Gold: "yes"/"no"."""

    name = "lhf"
    domain = "law"
    split_patterns = {split: (f"{split}.jsonl", f"{split}.tsv") for split in SPLITS}
    data_patterns = ("*.jsonl", "*.tsv", "*.json")
    formats = "ReGrad `{split}.jsonl` `{question, answer}` or LegalBench `{split}.tsv` (index, text, answer)"

    def read(self, path: Path) -> Iterator[QARecord]:
        if path.suffix.lower() == ".tsv":
            for where, row in iter_table(path, delimiter="\t"):
                require(where, row, "text", "answer", expected=self.formats)
                yield build_record(
                    where,
                    id=str(row.get("index") or _line_id(where)),
                    dataset=self.name,
                    question=LHF_QUESTION.format(text=row["text"].strip()),
                    answers=[yes_no_gold(where, row["answer"])],
                    answer_type="yes_no",
                )
            return
        yield from _prepared_yes_no(self, path, with_state=False)


class HousingQA(DatasetLoader):
    """HousingQA: ReGrad `{split}.jsonl` `{question, answer}` or RegLab's questions
    (`idx`, `state`, `question`, `answer` Yes/No; JSON list or JSONL). Gold: "yes"/"no"."""

    name = "housingqa"
    domain = "law"
    split_patterns = {split: (f"{split}.jsonl",) for split in SPLITS}
    data_patterns = ("*.jsonl", "*.json")
    formats = "ReGrad `{split}.jsonl` `{question, answer}` or RegLab `{idx, state, question, answer}`"

    def read(self, path: Path) -> Iterator[QARecord]:
        yield from _prepared_yes_no(self, path, with_state=True)


def _prepared_yes_no(loader: DatasetLoader, path: Path, with_state: bool) -> Iterator[QARecord]:
    for where, obj in iter_objects(path):
        require(where, obj, "question", "answer", expected=loader.formats)
        question = obj["question"]
        if with_state and obj.get("state"):
            question = HOUSINGQA_QUESTION.format(state=obj["state"], question=question)
        qid = obj.get("id", obj.get("idx", obj.get("test_id", _line_id(where))))
        yield build_record(
            where,
            id=str(qid),
            dataset=loader.name,
            question=question,
            answers=[yes_no_gold(where, obj["answer"])],
            answer_type="yes_no",
        )


class CaseHOLD(DatasetLoader):
    """CaseHOLD: ReGrad `{split}.jsonl` `{question, choices[5], answer}`, the published CSV
    (`citing_prompt`, `holding_0`..`holding_4`, `label` 0-4) or LexGLUE `{context, endings, label}`.

    Gold = the option letter ("A".."E"); a ReGrad `answer` may be the letter, the index or the text.
    """

    name = "casehold"
    domain = "law"
    split_patterns = {split: (f"{split}.jsonl", f"{split}.csv") for split in SPLITS}
    data_patterns = ("*.jsonl", "*.csv", "*.json")
    formats = (
        "ReGrad `{split}.jsonl` `{question, choices, answer}`, CaseHOLD CSV "
        "(citing_prompt, holding_0..holding_4, label) or LexGLUE `{context, endings, label}`"
    )

    def read(self, path: Path) -> Iterator[QARecord]:
        if path.suffix.lower() == ".csv":
            holdings = [f"holding_{i}" for i in range(len(CHOICE_LETTERS))]
            for where, row in iter_table(path, delimiter=","):
                require(where, row, "citing_prompt", *holdings, "label", expected=self.formats)
                qid = row.get("example_id") or row.get("") or _line_id(where)
                yield self._record(where, qid, row["citing_prompt"], [row[h] for h in holdings], row["label"])
            return
        for where, obj in iter_objects(path):
            if isinstance(obj, dict) and "endings" in obj:
                require(where, obj, "context", "label", expected=self.formats)
                yield self._record(where, obj.get("id", _line_id(where)), obj["context"], obj["endings"], obj["label"])
                continue
            require(where, obj, "question", "choices", "answer", expected=self.formats)
            yield self._record(
                where,
                obj.get("id", obj.get("test_id", _line_id(where))),
                obj["question"],
                obj["choices"],
                obj["answer"],
            )

    def _record(self, where: Where, qid: Any, question: Any, choices: Any, answer: Any) -> QARecord:
        if not isinstance(choices, list) or len(choices) != len(CHOICE_LETTERS):
            raise where.error(
                f"{len(choices) if isinstance(choices, list) else choices!r} choices; "
                f"CaseHOLD has {len(CHOICE_LETTERS)}"
            )
        choices = [str(c) for c in choices]
        return build_record(
            where,
            id=str(qid),
            dataset=self.name,
            question=question,
            answers=[_letter(where, answer, choices)],
            answer_type="choice",
            choices=choices,
        )


def _letter(where: Where, answer: Any, choices: list[str]) -> str:
    """The option letter an answer names: a letter, a 0-based index, or an option's exact text."""
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in CHOICE_LETTERS[: len(choices)]:
        return text.upper()
    if text.isdigit() and int(text) < len(choices):
        return choice_letter(int(text))
    stripped = [c.strip() for c in choices]
    if text in stripped:
        return choice_letter(stripped.index(text))
    raise where.error(
        f"answer {text[:60]!r} is neither a letter A-{CHOICE_LETTERS[len(choices) - 1]}, "
        f"an index 0-{len(choices) - 1} nor an option text"
    )
