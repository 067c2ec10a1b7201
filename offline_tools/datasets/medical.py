"""Medical loaders: PubMedQA (yes/no/maybe), MedQA (option letter), BioASQ (yes/no, factoid, list)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offline_tools.datasets.base import SPLITS, DatasetLoader, Selection, build_record, require, yes_no_gold
from offline_tools.datasets.readers import Where, iter_objects, read_json
from offline_tools.datasets.record import CHOICE_LETTERS, QARecord, dedupe
from offline_tools.errors import InputFileError

__all__ = ["PubMedQA", "MedQA", "BioASQ"]

_DECISION = re.compile(r"final decision is\s*[:\-]?\s*\**\s*(yes|no|maybe)\b", re.IGNORECASE)
_PUBMEDQA_GOLDS = ("yes", "no", "maybe")


class PubMedQA(DatasetLoader):
    """PubMedQA: published `ori_pqal.json` (`{PMID: {QUESTION, final_decision, ...}}`), the
    Hugging Face export (`pubid`, `question`, `final_decision`) or ReGrad's `{split}.jsonl`
    (`question`, `answer` holding "... The final decision is: yes").

    Gold = the final decision, "yes", "no" or "maybe" (kept; see docs/datasets.md for scoring).
    In a folder with `test_ground_truth.json`, split "test" is those PMIDs and "train"/"dev" are
    carved from the others, so the official test questions never reach training.
    """

    name = "pubmedqa"
    domain = "medical"
    split_patterns = {split: (f"{split}.jsonl",) for split in SPLITS}
    data_patterns = ("ori_pqal.json", "ori_pqa*.json", "*.jsonl", "*.json")
    aux_names = frozenset({"test_ground_truth.json"})
    formats = "published `ori_pqal.json`, Hugging Face `{pubid, question, final_decision}`, ReGrad `{split}.jsonl`"

    def select(self, folder: Path, split: str | None) -> Selection:
        truth_path = folder / "test_ground_truth.json"
        if split in SPLITS and not self.split_files(folder, split) and truth_path.is_file():
            truth = read_json(truth_path)
            if not isinstance(truth, dict):
                raise InputFileError(str(truth_path), "expected a JSON object `{PMID: decision}`")
            test_ids = {str(pmid) for pmid in truth}
            files = self.data_files(folder)
            if not files:
                raise InputFileError(str(folder), f"no PubMedQA question files here; expected {self.formats}")
            if split == "test":
                return Selection(files, is_split=True, keep=lambda record: record.id in test_ids)
            return Selection(files, is_split=False, keep=lambda record: record.id not in test_ids)
        return super().select(folder, split)

    def read(self, path: Path) -> Iterator[QARecord]:
        if path.suffix.lower() == ".json":
            data = read_json(path)
            if isinstance(data, dict):
                yield from self._keyed(path, data)
                return
        for where, obj in iter_objects(path):
            require(where, obj, "question", expected=self.formats)
            if "final_decision" in obj:
                gold = yes_no_gold(where, obj["final_decision"], _PUBMEDQA_GOLDS)
            else:
                require(where, obj, "answer", expected=self.formats)
                gold = self._decision(where, obj["answer"])
            qid = obj.get("pubid", obj.get("id", obj.get("test_id", where.line or where.index)))
            yield build_record(
                where,
                id=str(qid),
                dataset=self.name,
                question=obj["question"],
                answers=[gold],
                answer_type="yes_no",
            )

    def _keyed(self, path: Path, data: dict[str, Any]) -> Iterator[QARecord]:
        for index, (pmid, item) in enumerate(data.items()):
            where = Where(path, index=index)
            if isinstance(item, str):
                raise where.error(
                    "holds labels only (`test_ground_truth.json`); pass the folder that also holds ori_pqal.json"
                )
            require(where, item, "QUESTION", expected="`{PMID: {QUESTION, final_decision}}`")
            if "final_decision" not in item:
                raise where.error(f"PMID {pmid} has no `final_decision` (the unlabelled PQA-U set cannot be scored)")
            gold = yes_no_gold(where, item["final_decision"], _PUBMEDQA_GOLDS)
            yield build_record(
                where,
                id=str(pmid),
                dataset=self.name,
                question=item["QUESTION"],
                answers=[gold],
                answer_type="yes_no",
            )

    @staticmethod
    def _decision(where: Where, answer: Any) -> str:
        """The decision in a ReGrad answer: the word itself, or "The final decision is: X"."""
        if isinstance(answer, str) and answer.strip().lower() in _PUBMEDQA_GOLDS:
            return answer.strip().lower()
        match = _DECISION.search(answer) if isinstance(answer, str) else None
        if match is None:
            raise where.error(
                f"answer {str(answer)[:80]!r} states no decision; expected yes/no/maybe or "
                "'The final decision is: yes|no|maybe'"
            )
        return match.group(1).lower()


class MedQA(DatasetLoader):
    """MedQA (USMLE): published JSONL `{question, options: {A..D|E}, answer_idx, answer}` (the
    4-option `phrases_no_exclude_{split}.jsonl` or 5-option `{split}.jsonl`), and the
    MedAgents copy that adds `realidx`.

    Gold = `[answer_idx]`; `choices` = the option texts in letter order.
    """

    name = "medqa"
    domain = "medical"
    split_patterns = {split: (f"{split}.jsonl", f"phrases_no_exclude_{split}.jsonl") for split in SPLITS}
    data_patterns = ("*.jsonl",)
    formats = "published JSONL `{question, options, answer_idx}` (optionally `realidx`)"

    def read(self, path: Path) -> Iterator[QARecord]:
        for where, obj in iter_objects(path):
            require(where, obj, "question", "options", expected=self.formats)
            choices = self._options(where, obj["options"])
            letters = list(CHOICE_LETTERS[: len(choices)])
            gold = str(obj.get("answer_idx", "")).strip().upper()
            if gold not in letters:
                # Fall back to the answer text when the letter is absent; refuse when neither names an option.
                texts = [c.strip() for c in choices]
                text = str(obj.get("answer", "")).strip()
                if text not in texts:
                    raise where.error(
                        f"answer_idx {obj.get('answer_idx')!r} is not one of {letters} and "
                        f"answer {text[:60]!r} is not an option"
                    )
                gold = letters[texts.index(text)]
            qid = obj.get("realidx", obj.get("id", where.line if where.line is not None else where.index))
            yield build_record(
                where,
                id=str(qid),
                dataset=self.name,
                question=obj["question"],
                answers=[gold],
                answer_type="choice",
                choices=choices,
            )

    @staticmethod
    def _options(where: Where, options: Any) -> list[str]:
        if isinstance(options, list):  # [{key, value}, ...] in some re-exports
            try:
                options = {str(o["key"]): o["value"] for o in options}
            except (TypeError, KeyError) as e:
                raise where.error("`options` list must hold `{key, value}` objects") from e
        if not isinstance(options, dict) or not options:
            raise where.error(f"`options` is {options!r}; expected an object {{A: text, B: text, ...}}")
        keys = sorted(str(k).strip().upper() for k in options)
        if keys != list(CHOICE_LETTERS[: len(keys)]):
            raise where.error(f"option letters {keys}; expected consecutive letters from A (at most E)")
        by_letter = {str(k).strip().upper(): str(v) for k, v in options.items()}
        return [by_letter[letter] for letter in keys]


class BioASQ(DatasetLoader):
    """BioASQ Task B: `{"questions": [{id, body, type, exact_answer, ...}]}` files (training set
    `training*.json`, golden test batches `*_golden.json`).

    - `yesno` -> answer_type "yes_no", gold "yes"/"no";
    - `factoid` -> "short", gold = every synonym of every candidate, in file order;
    - `list` -> "short", gold = one string, the first synonym of each item joined by ", "
      (token F1 against it approximates BioASQ's list F-measure);
    - `summary` questions have no exact answer and are skipped.
    """

    name = "bioasq"
    domain = "medical"
    split_patterns = {"train": ("training*.json",)}
    data_patterns = ("*.json",)
    formats = "BioASQ Task B JSON `{questions: [{id, body, type, exact_answer}]}`"

    def read(self, path: Path) -> Iterator[QARecord]:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise InputFileError(str(path), f"expected {self.formats}")
        for index, item in enumerate(data["questions"]):
            where = Where(path, index=index)
            require(where, item, "id", "body", "type", expected=self.formats)
            kind = item["type"]
            if kind == "summary":
                continue
            if kind not in ("yesno", "factoid", "list"):
                raise where.error(f"question type {kind!r}; expected yesno, factoid, list or summary")
            if "exact_answer" not in item:
                raise where.error(f"{kind} question {item['id']} has no `exact_answer`")
            exact = item["exact_answer"]
            if kind == "yesno":
                yield build_record(
                    where,
                    id=str(item["id"]),
                    dataset=self.name,
                    question=item["body"],
                    answers=[yes_no_gold(where, exact)],
                    answer_type="yes_no",
                )
                continue
            if kind == "factoid":
                answers = dedupe(_flatten(exact))
            else:
                items = exact if isinstance(exact, list) else [exact]
                firsts = [synonyms[0] for synonyms in (dedupe(_flatten(entry)) for entry in items) if synonyms]
                answers = dedupe([", ".join(firsts)])
            yield build_record(where, id=str(item["id"]), dataset=self.name, question=item["body"], answers=answers)


def _flatten(value: Any) -> list[str]:
    """Strings of an arbitrarily nested list, in order (factoid golds are lists of synonym lists)."""
    if isinstance(value, list):
        return [text for entry in value for text in _flatten(entry)]
    return [str(value)] if value is not None else []
