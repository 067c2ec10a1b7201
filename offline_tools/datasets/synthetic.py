"""The synthetic knowledge-injection benchmark written by `regrad synth` (see `offline_tools/benchmarks/synth.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from offline_tools.datasets.base import DatasetLoader, build_record, require
from offline_tools.datasets.readers import iter_objects
from offline_tools.datasets.record import QARecord, dedupe

__all__ = ["Synth"]


class Synth(DatasetLoader):
    """`regrad synth` output: a folder with train.jsonl, dev.jsonl, test.jsonl (and corpus.jsonl)."""

    name = "synth"
    domain = "general"
    split_patterns = {split: (f"{split}.jsonl",) for split in ("train", "dev", "test")}
    data_patterns = ("*.jsonl",)
    aux_names = frozenset({"corpus.jsonl"})
    formats = "`regrad synth` JSONL `{id, question, answers}`"

    def read(self, path: Path) -> Iterator[QARecord]:
        for where, obj in iter_objects(path):
            require(where, obj, "id", "question", "answers", expected=self.formats)
            answers = obj["answers"] if isinstance(obj["answers"], list) else [obj["answers"]]
            yield build_record(where, id=str(obj["id"]), dataset=self.name, question=obj["question"],
                               answers=dedupe(answers))
