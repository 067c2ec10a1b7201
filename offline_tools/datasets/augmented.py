"""The augmented question file `data_aug/<dataset>/<split>.jsonl`: read, write, resume.

One JSON object per line (train, encode and evaluate read exactly this):

    {"id": str, "dataset": str, "question": str, "answers": [str, ...],
     "answer_type": "short" | "yes_no" | "choice", "choices": [str, ...] | null,
     "passages": [{"id": str, "title": str, "text": str, "score": float}, ...]}

Appends are one `write` of a whole line plus a flush, so a crash can only leave the last line
torn (no trailing newline); `AugmentedWriter` cuts such a line off before it appends.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from offline_tools.datasets.record import QARecord, record_fields
from offline_tools.errors import InputFileError
from offline_tools.files import atomic_text

__all__ = [
    "AugmentedPassage",
    "AugmentedRecord",
    "AugmentedWriter",
    "read_augmented",
    "write_augmented",
    "repair_torn_tail",
]


@dataclass
class AugmentedPassage:
    """A retrieved passage as stored with a question (rank = list position)."""

    id: str
    title: str
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "score": self.score}

    @classmethod
    def from_dict(cls, data: Any) -> AugmentedPassage:
        if not isinstance(data, dict):
            raise TypeError(f"a passage is a JSON {type(data).__name__}; expected an object")
        missing = [key for key in ("id", "title", "text", "score") if key not in data]
        if missing:
            raise KeyError(f"passage is missing field(s) {missing}")
        if not isinstance(data["id"], str) or not isinstance(data["title"], str) or not isinstance(data["text"], str):
            raise TypeError("passage `id`, `title` and `text` must be strings")
        score = data["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise TypeError(f"passage score {score!r} must be a finite number")
        return cls(id=data["id"], title=data["title"], text=data["text"], score=float(score))


@dataclass
class AugmentedRecord(QARecord):
    """A `QARecord` plus its retrieved passages, best first (never padded: may hold fewer than k)."""

    passages: list[AugmentedPassage] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: QARecord, passages: Iterable[AugmentedPassage]) -> AugmentedRecord:
        return cls(
            id=record.id,
            dataset=record.dataset,
            question=record.question,
            answers=list(record.answers),
            answer_type=record.answer_type,
            choices=list(record.choices) if record.choices is not None else None,
            passages=list(passages),
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["passages"] = [p.to_dict() for p in self.passages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentedRecord:
        fields = record_fields(data)
        passages = data.get("passages")
        if not isinstance(passages, list):
            raise KeyError("missing field(s) ['passages']" if passages is None else "`passages` must be a list")
        return cls(**fields, passages=[AugmentedPassage.from_dict(p) for p in passages])


def _dumps(record: AugmentedRecord) -> str:
    # ensure_ascii=False keeps titles such as "Małgorzata Braunek" readable; one line, no indent.
    return json.dumps(record.to_dict(), ensure_ascii=False) + "\n"


def read_augmented(path: str | Path) -> Iterator[AugmentedRecord]:
    """Stream the records of an augmented file.

    Args:
        path: a `.jsonl` file written by `regrad augment` (or `write_augmented`).

    Returns:
        An iterator of `AugmentedRecord`, in file order.

    Raises:
        InputFileError: missing file, or a malformed line (names the file and the line).

    Example:
        >>> for record in read_augmented("data_aug/hotpotqa/dev.jsonl"):
        ...     print(record.question, [p.id for p in record.passages])
    """
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115  (closed by the with below)
    except FileNotFoundError as e:
        raise InputFileError(str(path), "augmented file not found; create it with `regrad augment`") from e
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield _parse_line(path, line_no, line)


def _parse_line(path: Path, line_no: int, line: str) -> AugmentedRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        torn = "" if line.endswith("\n") else " (a torn last line: rerun `regrad augment` to repair it)"
        raise InputFileError(str(path), f"invalid JSON: {e.msg} (column {e.colno}){torn}", line=line_no) from e
    try:
        return AugmentedRecord.from_dict(data)
    except KeyError as e:
        message = e.args[0] if e.args and isinstance(e.args[0], str) else repr(e)
        raise InputFileError(str(path), f"{message}; expected an augmented record", line=line_no) from e
    except (TypeError, ValueError) as e:
        raise InputFileError(str(path), f"{e}; expected an augmented record", line=line_no) from e


def repair_torn_tail(path: str | Path) -> int:
    """Cut an unterminated last line (a crash mid-append) off `path`; return the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline in blocks; everything after it is the torn line.
        position = size
        keep = 0
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            block = handle.read(position - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


class AugmentedWriter:
    """Append records to an augmented file, one flushed line each; resumable.

    Opening repairs a torn last line, then reads the ids already present (`done_ids`), so a
    rerun skips them. Use as a context manager.

    Example:
        >>> with AugmentedWriter("data_aug/hotpotqa/dev.jsonl") as writer:
        ...     for record in records:
        ...         if record.id not in writer.done_ids:
        ...             writer.write(record)
    """

    def __init__(self, path: str | Path, dataset: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_torn_tail(self.path)
        self.done_ids: set[str] = set()
        if self.path.exists():
            for record in read_augmented(self.path):
                if dataset is not None and record.dataset != dataset:
                    raise InputFileError(
                        str(self.path),
                        f"holds {record.dataset!r} questions, not {dataset!r}; pass another --output",
                    )
                self.done_ids.add(record.id)
        self._handle: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.written = 0

    def write(self, record: AugmentedRecord) -> None:
        """Append one record as one line and flush it to the OS."""
        if self._handle is None:
            raise ValueError(f"writer for {self.path} is closed")
        self._handle.write(_dumps(record))
        self._handle.flush()
        self.done_ids.add(record.id)
        self.written += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> AugmentedWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_augmented(path: str | Path, records: Iterable[AugmentedRecord]) -> int:
    """Write a whole augmented file atomically (temp file, fsync, rename); return the count.

    Args:
        path: destination `.jsonl`; replaced if it exists.
        records: the records, in output order.

    Returns:
        The number of records written.
    """
    count = 0
    with atomic_text(path) as handle:
        for record in records:
            handle.write(_dumps(record))
            count += 1
    return count
