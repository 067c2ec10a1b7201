"""QA dataset loaders: ten datasets, one record type (see docs/datasets.md)."""

from offline_tools.datasets.base import DatasetLoader
from offline_tools.datasets.record import ANSWER_TYPES, CHOICE_LETTERS, AnswerType, QARecord, dedupe
from offline_tools.datasets.registry import (
    DATASETS,
    SPLIT_CHOICES,
    is_dev,
    load_dataset,
    load_split,
    split_records,
)

__all__ = [
    "QARecord",
    "AnswerType",
    "ANSWER_TYPES",
    "CHOICE_LETTERS",
    "DATASETS",
    "DatasetLoader",
    "SPLIT_CHOICES",
    "dedupe",
    "is_dev",
    "load_dataset",
    "load_split",
    "split_records",
]
