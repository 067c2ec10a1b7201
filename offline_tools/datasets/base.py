"""What every dataset loader has in common: finding its files in a folder and reading them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline_tools.datasets.readers import Where, describe
from offline_tools.datasets.record import QARecord
from offline_tools.errors import InputFileError

__all__ = ["DatasetLoader", "Selection", "SPLITS", "build_record", "require", "yes_no_gold"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


@dataclass
class Selection:
    """The files a (path, split) pair resolves to.

    Args:
        files: data files to read, in order.
        is_split: True when the files (after `keep`) *are* the requested split, as published;
            False when they hold no split and `split_records` must carve train/dev from them.
        keep: optional filter on records (PubMedQA's official test PMIDs).
    """

    files: list[Path]
    is_split: bool
    keep: Callable[[QARecord], bool] | None = None


def build_record(where: Where, **fields: Any) -> QARecord:
    """A `QARecord`, or an `InputFileError` at `where` naming the bad field."""
    try:
        return QARecord(**fields)
    except (KeyError, ValueError, TypeError) as e:
        raise where.error(describe(e)) from e


def require(where: Where, obj: Any, *keys: str, expected: str) -> None:
    """Raise at `where` unless `obj` is a JSON object holding every key in `keys`."""
    if not isinstance(obj, dict):
        raise where.error(f"a JSON {type(obj).__name__}; expected an object in {expected}")
    missing = [key for key in keys if key not in obj]
    if missing:
        raise where.error(f"missing field(s) {missing}; expected {expected}")


def yes_no_gold(where: Where, value: Any, allowed: tuple[str, ...] = ("yes", "no")) -> str:
    """Lower-case a yes/no gold and check it (the reference's `answer.lower()`)."""
    gold = str(value).strip().lower() if isinstance(value, str) else None
    if gold not in allowed:
        raise where.error(f"answer is {value!r}; expected one of {list(allowed)}")
    return gold


class DatasetLoader:
    """One dataset: its name, where its files sit in a folder, and how to read one file.

    Subclasses set the class attributes and implement `read(path)`, which detects the file's
    format from its content (published vs shared-data layout) and yields records.
    """

    name: str = ""
    domain: str = ""
    #: Exact file names, per split, of the published layout (glob patterns allowed).
    split_patterns: dict[str, tuple[str, ...]] = {}
    #: Data files of a folder without per-split files.
    data_patterns: tuple[str, ...] = ("*.jsonl", "*.json")
    #: Helper files that sit beside the data and are not questions.
    aux_names: frozenset[str] = frozenset()
    #: One line naming the accepted formats, for error messages.
    formats: str = ""

    def read(self, path: Path) -> Iterator[QARecord]:
        raise NotImplementedError

    def split_files(self, folder: Path, split: str) -> list[Path]:
        """Files of `split` in the published layout of `folder` (empty when there are none)."""
        found: list[Path] = []
        for pattern in self.split_patterns.get(split, ()):
            found.extend(sorted(p for p in folder.glob(pattern) if p.is_file() and p.name not in self.aux_names))
        return found

    def data_files(self, folder: Path) -> list[Path]:
        """Every question file of `folder`, split files first, each once."""
        files: list[Path] = []
        for split in SPLITS:
            files.extend(self.split_files(folder, split))
        for pattern in self.data_patterns:
            files.extend(sorted(p for p in folder.glob(pattern) if p.is_file() and p.name not in self.aux_names))
        return list(dict.fromkeys(files))

    def select(self, folder: Path, split: str | None) -> Selection:
        """Resolve a folder and a split (None or "all": everything) to files.

        A folder with published per-split files serves those splits only: asking it for another
        split is an error (carving dev out of a folder that also holds train would leak). A
        folder without any split files is one pool; `split_records` carves train/dev from it.
        """
        if split in SPLITS:
            files = self.split_files(folder, split)
            if files:
                return Selection(files, is_split=True)
            available = [s for s in SPLITS if self.split_files(folder, s)]
            if available:
                patterns = self.split_patterns.get(split, ())
                wanted = f"looked for {', '.join(patterns)}" if patterns else "none is published"
                raise InputFileError(
                    str(folder),
                    f"no {self.name} {split!r} file ({wanted}); this folder has "
                    f"split(s) {available}: pass one of those, `--split all`, or a single file",
                )
        files = self.data_files(folder)
        if not files:
            raise InputFileError(
                str(folder),
                f"no {self.name} question files here (looked for {self._all_patterns()}); expected {self.formats}",
            )
        return Selection(files, is_split=split is None or split == "all")

    def _all_patterns(self) -> list[str]:
        patterns = [p for split in SPLITS for p in self.split_patterns.get(split, ())]
        return list(dict.fromkeys([*patterns, *self.data_patterns]))

    def load(self, path: Path, split: str | None = None) -> tuple[Iterator[QARecord], bool]:
        """Records of `path` (a file or a folder) for `split`, and whether they are that split."""
        if not path.exists():
            raise InputFileError(str(path), f"not found; pass a {self.name} file or folder ({self.formats})")
        selection = self.select(path, split) if path.is_dir() else Selection([path], is_split=False)
        return self._iter(selection), selection.is_split

    def _iter(self, selection: Selection) -> Iterator[QARecord]:
        seen: set[str] = set()
        duplicates = 0
        for file in selection.files:
            for record in self.read(file):
                if selection.keep is not None and not selection.keep(record):
                    continue
                if record.id in seen:
                    duplicates += 1  # e.g. HotpotQA's first-100 file is inside the IRCoT file
                    continue
                seen.add(record.id)
                yield record
        if duplicates:
            logger.warning("%s: skipped %d question(s) whose id appeared earlier", self.name, duplicates)
