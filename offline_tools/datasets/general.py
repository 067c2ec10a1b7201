"""General-domain loaders: 2WikiMultihopQA, HotpotQA, PopQA, ComplexWebQuestions.

Each reads the published file format and the formats in the shared data folder: PRAG's
`{test_id, question, answer}` list and FlashRAG's `{id, question, golden_answers}` lines.
A record's format is told from its keys, so one reader serves every layout.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from offline_tools.datasets.base import DatasetLoader, build_record, require
from offline_tools.datasets.readers import Where, iter_json_records, iter_objects, iter_table
from offline_tools.datasets.record import QARecord, dedupe

__all__ = ["TwoWikiMultihopQA", "HotpotQA", "PopQA", "ComplexWebQuestions", "parse_list_literal"]

logger = logging.getLogger(__name__)

_SHARED_FORMATS = "PRAG `{test_id, question, answer}` or FlashRAG `{id, question, golden_answers}`"


def parse_list_literal(where: Where, text: Any, field: str) -> list[str]:
    """A list of strings from a JSON or Python list literal (PopQA's `o_aliases`); never `eval`."""
    if isinstance(text, list):
        return [str(x) for x in text]
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise where.error(f"`{field}` is {text!r}; expected a JSON list of strings") from e
    if not isinstance(value, list):
        raise where.error(f"`{field}` is {text!r}; expected a JSON list of strings")
    return [str(x) for x in value]


def _answer_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _shared_record(loader: DatasetLoader, where: Where, obj: dict[str, Any]) -> QARecord | None:
    """PRAG or FlashRAG shape, or None when `obj` is neither."""
    if "test_id" in obj and "answer" in obj:
        require(where, obj, "question", expected=_SHARED_FORMATS)
        answers = dedupe(_answer_list(obj["answer"]))
        return build_record(
            where, id=str(obj["test_id"]), dataset=loader.name, question=obj["question"], answers=answers
        )
    if "golden_answers" in obj:
        require(where, obj, "id", "question", expected=_SHARED_FORMATS)
        return build_record(
            where,
            id=str(obj["id"]),
            dataset=loader.name,
            question=obj["question"],
            answers=dedupe(_answer_list(obj["golden_answers"])),
        )
    return None


class TwoWikiMultihopQA(DatasetLoader):
    """2WikiMultihopQA: published `{split}.json` (+ `id_aliases.json` beside it), or PRAG/FlashRAG.

    Published records give `answer` and `answer_id`; the gold list is the canonical answer
    followed by the aliases of `answer_id` (the reference trains on `aliases[0]` instead).
    """

    name = "2wikimultihopqa"
    domain = "general"
    split_patterns = {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",)}
    data_patterns = ("*.json", "*.jsonl")
    aux_names = frozenset({"id_aliases.json"})
    formats = f"published `{{split}}.json` + `id_aliases.json`, {_SHARED_FORMATS}"

    def read(self, path: Path) -> Iterator[QARecord]:
        aliases: dict[str, list[str]] | None = None
        for where, obj in iter_objects(path):
            require(where, obj, "question", expected=self.formats)
            shared = _shared_record(self, where, obj)
            if shared is not None:
                yield shared
                continue
            require(where, obj, "_id", "answer", expected=self.formats)
            answers = [obj["answer"]]
            if obj.get("answer_id"):
                if aliases is None:
                    aliases = self._aliases(path.parent / "id_aliases.json")
                # An id may be missing from id_aliases.json (the authors' research code crashed on it:
                # shared/reference/seed-method.md); the answer alone is still gold.
                answers += aliases.get(str(obj["answer_id"]), [])
            yield build_record(
                where,
                id=str(obj["_id"]),
                dataset=self.name,
                question=obj["question"],
                answers=dedupe(answers),
            )

    @staticmethod
    def _aliases(path: Path) -> dict[str, list[str]]:
        if not path.is_file():
            logger.warning("%s not found: 2WikiMultihopQA golds are the canonical answers only", path)
            return {}
        table: dict[str, list[str]] = {}
        for where, obj in iter_json_records(path):
            require(where, obj, "Q_id", "aliases", expected="id_aliases.json lines `{Q_id, aliases}`")
            table[str(obj["Q_id"])] = [str(a) for a in _answer_list(obj["aliases"])]
        return table


class HotpotQA(DatasetLoader):
    """HotpotQA: the published JSON list (`_id`, or `id` in the Hugging Face export), IRCoT's
    processed JSONL (`question_id`, `question_text`, `answers_objects`), PRAG or FlashRAG.

    As in the reference, "train" is `hotpot_train_v1.1.json` and "dev" the distractor dev file.
    Comparison questions keep their "yes"/"no" golds as short answers (the reference's generic prompt).
    """

    name = "hotpotqa"
    domain = "general"
    split_patterns = {"train": ("hotpot_train_v1.1.json",), "dev": ("hotpot_dev_distractor_v1.json",)}
    data_patterns = ("*.json", "*.jsonl")
    formats = f"published `hotpot_*_v1*.json`, IRCoT JSONL, {_SHARED_FORMATS}"

    def read(self, path: Path) -> Iterator[QARecord]:
        for where, obj in iter_objects(path):
            if isinstance(obj, dict) and "question_text" in obj:
                yield self._ircot(where, obj)
                continue
            require(where, obj, "question", expected=self.formats)
            shared = _shared_record(self, where, obj)
            if shared is not None:
                yield shared
                continue
            if "_id" not in obj and "id" not in obj:
                raise where.error(f"missing field '_id'; expected {self.formats}")
            require(where, obj, "answer", expected=f"{self.formats} (the test file has no answers)")
            yield build_record(
                where,
                id=str(obj.get("_id", obj.get("id"))),
                dataset=self.name,
                question=obj["question"],
                answers=dedupe([obj["answer"]]),
            )

    def _ircot(self, where: Where, obj: dict[str, Any]) -> QARecord:
        require(where, obj, "question_id", "answers_objects", expected="IRCoT JSONL")
        answers: list[Any] = []
        for answer in obj["answers_objects"] or []:
            answers.extend(answer.get("spans") or [])
            if answer.get("number"):
                answers.append(answer["number"])
        return build_record(
            where,
            id=str(obj["question_id"]),
            dataset=self.name,
            question=obj["question_text"],
            answers=dedupe(answers),
        )


class PopQA(DatasetLoader):
    """PopQA: the published `popQA.tsv` or FlashRAG JSONL with `metadata`.

    Gold = `[obj] + o_aliases` (the reference), then any further `possible_answers` /
    `golden_answers` (PopQA repeats a question for same-named subjects; both objects are right).
    The aliases are parsed as JSON (Python-literal fallback); never with `eval`.
    """

    name = "popqa"
    domain = "general"
    data_patterns = ("popQA.tsv", "*.tsv", "*.jsonl", "*.json")
    formats = "published `popQA.tsv`, FlashRAG JSONL `{id, question, golden_answers, metadata}`"

    def read(self, path: Path) -> Iterator[QARecord]:
        if path.suffix.lower() == ".tsv":
            for where, row in iter_table(path, delimiter="\t"):
                require(where, row, "id", "question", "obj", "o_aliases", expected=self.formats)
                answers = [row["obj"], *parse_list_literal(where, row["o_aliases"], "o_aliases")]
                answers += parse_list_literal(where, row.get("possible_answers"), "possible_answers")
                yield build_record(
                    where,
                    id=str(row["id"]),
                    dataset=self.name,
                    question=row["question"],
                    answers=dedupe(answers),
                )
            return
        for where, obj in iter_objects(path):
            require(where, obj, "question", expected=self.formats)
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else obj
            answers: list[Any] = []
            if "obj" in meta:
                answers = [meta["obj"], *parse_list_literal(where, meta.get("o_aliases"), "o_aliases")]
            answers += _answer_list(obj.get("golden_answers", obj.get("answer", [])))
            if "id" not in obj and "test_id" not in obj:
                raise where.error(f"missing field 'id'; expected {self.formats}")
            yield build_record(
                where,
                id=str(obj.get("id", obj.get("test_id"))),
                dataset=self.name,
                question=obj["question"],
                answers=dedupe(answers),
            )


class ComplexWebQuestions(DatasetLoader):
    """ComplexWebQuestions: the published `ComplexWebQuestions_{split}.json` or PRAG's list.

    Gold = for each entry of `answers`, its `answer` then its `aliases`, de-duplicated in order
    (the reference used `set()`, so its training target changed between runs).
    """

    name = "complexwebquestions"
    domain = "general"
    split_patterns = {split: (f"ComplexWebQuestions_{split}.json",) for split in ("train", "dev", "test")}
    data_patterns = ("*.json", "*.jsonl")
    formats = f"published `ComplexWebQuestions_{{split}}.json`, {_SHARED_FORMATS}"

    def read(self, path: Path) -> Iterator[QARecord]:
        for where, obj in iter_objects(path):
            require(where, obj, "question", expected=self.formats)
            shared = _shared_record(self, where, obj)
            if shared is not None:
                yield shared
                continue
            require(where, obj, "ID", "answers", expected=self.formats)
            answers: list[Any] = []
            for entry in obj["answers"] or []:
                if not isinstance(entry, dict):
                    raise where.error(f"an `answers` entry is {entry!r}; expected `{{answer, aliases}}`")
                answers.append(entry.get("answer"))
                answers.extend(entry.get("aliases") or [])
            yield build_record(
                where, id=str(obj["ID"]), dataset=self.name, question=obj["question"], answers=dedupe(answers)
            )
