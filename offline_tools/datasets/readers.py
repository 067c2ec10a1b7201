"""Streaming readers for JSON, JSON Lines and TSV/CSV files whose errors name the file and line."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from offline_tools.errors import InputFileError

__all__ = ["Where", "describe", "open_text", "read_json", "iter_json_records", "iter_table", "iter_objects"]

# CaseHOLD excerpts and BioASQ snippets can exceed csv's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Where:
    """Where a record came from: file, 1-based line (JSONL, TSV) or 0-based index (JSON list)."""

    path: Path
    line: int | None = None
    index: int | None = None

    def error(self, message: str) -> InputFileError:
        """An `InputFileError` at this place (a JSON list item is named by its index)."""
        if self.line is None and self.index is not None:
            message = f"record #{self.index}: {message}"
        return InputFileError(str(self.path), message, line=self.line)


def describe(error: BaseException) -> str:
    """A one-line description of a KeyError/ValueError/TypeError raised while reading a record."""
    if isinstance(error, KeyError):
        key = error.args[0] if error.args else "?"
        return key if isinstance(key, str) and key.startswith("missing") else f"missing field {key!r}"
    return str(error)


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """Open a UTF-8 text file; a missing file is an `InputFileError` naming it."""
    try:
        return open(path, encoding="utf-8", newline=newline)
    except FileNotFoundError as e:
        raise InputFileError(str(path), "file not found; check the path") from e
    except IsADirectoryError as e:
        raise InputFileError(str(path), "is a folder; expected a file") from e


def read_json(path: Path) -> Any:
    """Parse a whole JSON file; a syntax error names its line."""
    try:
        with open_text(path) as handle:
            return json.load(handle)
    except UnicodeDecodeError as e:
        raise InputFileError(str(path), f"not UTF-8 text ({e.reason}); expected a JSON file") from e
    except json.JSONDecodeError as e:
        raise InputFileError(str(path), f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from e


def iter_json_records(path: Path) -> Iterator[tuple[Where, Any]]:
    """Yield `(where, object)` for each non-blank line of a JSON Lines file."""
    with open_text(path) as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):  # noqa: B007  (line_no is read in except)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputFileError(
                        str(path),
                        f"invalid JSON: {e.msg} (column {e.colno}); expected one JSON object per line",
                        line=line_no,
                    ) from e
                yield Where(path, line=line_no), obj
        except UnicodeDecodeError as e:
            raise InputFileError(str(path), f"not UTF-8 text ({e.reason})", line=line_no + 1) from e


def iter_table(path: Path, delimiter: str) -> Iterator[tuple[Where, dict[str, str]]]:
    """Yield `(where, row)` for each data row of a TSV/CSV file with a header row."""
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            if not reader.fieldnames:
                raise InputFileError(str(path), "empty file; expected a header row")
            for row in reader:
                if None in row:
                    raise InputFileError(
                        str(path),
                        f"{len(reader.fieldnames) + len(row[None])} columns, header has {len(reader.fieldnames)}",
                        line=reader.line_num,
                    )
                yield Where(path, line=reader.line_num), row
        except csv.Error as e:
            raise InputFileError(str(path), f"malformed table: {e}", line=reader.line_num) from e
        except UnicodeDecodeError as e:
            raise InputFileError(str(path), f"not UTF-8 text ({e.reason})", line=reader.line_num + 1) from e


def iter_objects(path: Path) -> Iterator[tuple[Where, Any]]:
    """Yield `(where, item)` from a JSON list (`.json`) or a JSON Lines file (anything else).

    A `.json` file that holds JSON Lines (several objects, one per line) is read as JSON Lines.
    """
    if path.suffix.lower() != ".json":
        yield from iter_json_records(path)
        return
    try:
        data = read_json(path)
    except InputFileError as e:
        if e.line is not None and e.line > 1 and _looks_like_jsonl(path):
            yield from iter_json_records(path)
            return
        raise
    if not isinstance(data, list):
        raise InputFileError(str(path), f"top level is a JSON {type(data).__name__}; expected a list of questions")
    for index, item in enumerate(data):
        yield Where(path, index=index), item


def _looks_like_jsonl(path: Path) -> bool:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False
