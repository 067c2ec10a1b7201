"""The dataset registry, `load_dataset`, and the hash-of-id train/dev split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from offline_tools.datasets.base import DatasetLoader
from offline_tools.datasets.general import ComplexWebQuestions, HotpotQA, PopQA, TwoWikiMultihopQA
from offline_tools.datasets.law import LHF, CaseHOLD, HousingQA
from offline_tools.datasets.medical import BioASQ, MedQA, PubMedQA
from offline_tools.datasets.record import QARecord
from offline_tools.datasets.synthetic import Synth
from offline_tools.errors import UsageError

__all__ = ["DATASETS", "SPLIT_CHOICES", "load_dataset", "load_split", "split_records", "is_dev"]

DATASETS: dict[str, DatasetLoader] = {
    loader.name: loader
    for loader in (
        TwoWikiMultihopQA(),
        HotpotQA(),
        PopQA(),
        ComplexWebQuestions(),
        PubMedQA(),
        MedQA(),
        BioASQ(),
        LHF(),
        HousingQA(),
        CaseHOLD(),
        Synth(),
    )
}
SPLIT_CHOICES = ("train", "dev", "test", "all")


def _loader(name: str) -> DatasetLoader:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def load_dataset(name: str, path: str | Path, split: str | None = None) -> Iterator[QARecord]:
    """Stream the questions of a dataset file or folder.

    Args:
        name: a key of `DATASETS` (e.g. "hotpotqa").
        path: a file in any supported format (its `split` is ignored), or a folder in the
            published layout, where `split` picks the file(s) ("train", "dev", "test"; None or
            "all" reads every question file in it).
        split: see `path`.

    Returns:
        An iterator of `QARecord`, in file order, each id once.

    Raises:
        InputFileError: the file is missing or malformed (names the file and line).

    Example:
        >>> records = list(load_dataset("hotpotqa", "data/hotpotqa/ircot_hotpotqa_dev_subsampled.jsonl"))
    """
    records, _ = _loader(name).load(Path(path), split)
    return records


def is_dev(record_id: str, dev_fraction: float) -> bool:
    """True when the id's hash puts it in dev: sha256(id) read as a number in [0, 1) < dev_fraction."""
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < dev_fraction


def split_records(
    records: Iterable[QARecord], split: Literal["train", "dev", "all"], dev_fraction: float = 0.25
) -> list[QARecord]:
    """Carve train or dev out of questions that come without a split, by a hash of each id.

    The rule depends on the id alone, so it is the same in every run and every process, train
    and dev never overlap, and a question keeps its side when the file grows or is sliced (the
    HotpotQA first-100 file and the IRCoT file share ids, so they split alike).

    Args:
        records: the questions.
        split: "train", "dev" or "all" (everything).
        dev_fraction: the expected share of dev, in (0, 1).

    Returns:
        The records of that split, in their original order.
    """
    if split not in ("train", "dev", "all"):
        raise UsageError(f"split {split!r} cannot be carved by hash; expected 'train', 'dev' or 'all'")
    if not 0.0 < dev_fraction < 1.0:
        raise UsageError(f"--dev-fraction is {dev_fraction}; expected a number between 0 and 1, e.g. 0.25")
    if split == "all":
        return list(records)
    want_dev = split == "dev"
    return [record for record in records if is_dev(record.id, dev_fraction) == want_dev]


def load_split(name: str, path: str | Path, split: str = "all", dev_fraction: float = 0.25) -> list[QARecord]:
    """The questions of one split, whether or not the data comes split.

    A folder with published split files gives that split's file. Anything else (one file, or a
    folder without split files) is one pool: "train"/"dev" are carved by `split_records`, and
    "test"/"all" are the whole pool.

    Args:
        name: a key of `DATASETS`.
        path: a dataset file or folder.
        split: "train", "dev", "test" or "all".
        dev_fraction: dev share for carved splits.

    Returns:
        The records, in file order.
    """
    if split not in SPLIT_CHOICES:
        raise UsageError(f"split {split!r}; expected one of {list(SPLIT_CHOICES)}")
    records, is_split = _loader(name).load(Path(path), split)
    if is_split or split in ("test", "all"):
        return list(records)
    return split_records(records, split, dev_fraction)  # type: ignore[arg-type]
