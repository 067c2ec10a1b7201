"""Corpus readers: files of passages or of QA contexts -> a stream of `Passage`.

Formats:
    dpr       DPR `psgs_w100.tsv`: a header `id<TAB>text<TAB>title`, then one passage per row.
    jsonl     one JSON object per line: `_id` or `id` (a hash of title+text when absent), `title`,
              `text` or `contents` (FlashRAG's `"<title>"\\n<text>` contents form is split).
    beir      a BEIR `corpus.jsonl` (`_id`, `title`, `text`), or a BEIR dataset folder holding one.
    hotpotqa  HotpotQA (and 2Wiki dev) questions: `context: [[title, [sentences]]]`.
    ircot     IRCoT processed questions: `contexts: [{title, paragraph_text, ...}]`.
    2wiki     a JSON list of `{title, text}` paragraphs (HippoRAG's 2Wiki corpus).
    pubmedqa  PubMedQA `ori_pqal.json` (`{PMID: {QUESTION, CONTEXTS, ...}}`): one passage per PMID,
              its abstract sections (`CONTEXTS`) joined, id `pubmed-<PMID>`. `LONG_ANSWER` (the
              abstract's conclusion, which states the answer) is left out, as in PubMedQA's
              reasoning-required setting.
    bioasq    BioASQ Task B JSON (`{questions: [{snippets: [{text, document}]}]}`): one passage per
              distinct snippet, titled with its PubMed id.

Question files (hotpotqa, ircot) repeat a paragraph under every question that cites it, and their
per-question ids ("0".."9") are not stable, so every paragraph gets `passage_id(title, text)`:
one paragraph, one id, wherever it appears (the index replaces a repeated id, so it is stored once).

Memory stays flat: JSONL and TSV are read line by line, and a file holding one big JSON array
(2Wiki, HotpotQA's original layout) is parsed one element at a time. Only one element is ever in
memory, so a single element larger than `max_element_chars` is refused. The two formats stored as
one JSON object (pubmedqa, bioasq; a few MB each) are read whole, under the same limit, and errors
name the PMID or question. `.gz` files are read as-is.

A malformed record raises `CorpusFormatError(path, line, message)`, or with `skip_bad_lines=True`
is counted in `reader.stats.skipped` and skipped. A JSON syntax error inside a JSON array cannot be
skipped (there is no next line to resume from) and always raises.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from retrieval.errors import CorpusFormatError
from retrieval.passage import Passage, normalize_whitespace, passage_id

__all__ = ["CorpusReader", "CorpusStats", "read_corpus", "corpus_files", "detect_format", "FORMATS"]

FORMATS = ("dpr", "jsonl", "beir", "hotpotqa", "ircot", "2wiki", "pubmedqa", "bioasq")
_DOCUMENT_FORMATS = ("pubmedqa", "bioasq")  # one JSON object per file, read whole
_CHUNK_CHARS = 1 << 20
_MAX_ELEMENT_CHARS = 64 << 20
_MAX_ERRORS_KEPT = 5


class _BadRecord(Exception):
    """A record that parsed but does not have the fields its format needs."""


@dataclass
class CorpusStats:
    """What a reader has seen so far.

    Args:
        path: the file read.
        format: the resolved format.
        records: lines, rows or JSON elements read (questions, for QA formats).
        passages: passages yielded.
        skipped: malformed records skipped (`skip_bad_lines=True`).
        errors: the first few skipped records' messages, `path:line: reason`.
    """

    path: str
    format: str
    records: int = 0
    passages: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class CorpusReader:
    """Iterate the passages of one corpus file.

    Args:
        path: the corpus file (or a BEIR dataset folder).
        format: one of `FORMATS`, or `auto` to detect it from the name and first record.
        skip_bad_lines: skip malformed records (counted in `stats`) instead of raising.
        max_element_chars: longest single element of a JSON-array file.

    Example:
        >>> reader = CorpusReader("corpus.jsonl")              # doctest: +SKIP
        >>> for passage in reader: ...                         # doctest: +SKIP
        >>> reader.stats.passages, reader.stats.skipped        # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        format: str = "auto",
        skip_bad_lines: bool = False,
        max_element_chars: int = _MAX_ELEMENT_CHARS,
    ) -> None:
        path = Path(path)
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            path = path / "corpus.jsonl"  # a BEIR dataset folder
        if not path.is_file():
            raise CorpusFormatError(str(path), None, "no such file; check the --corpus path")
        if format != "auto" and format not in FORMATS:
            raise CorpusFormatError(
                str(path), None, f"unknown format {format!r}; use auto or one of {', '.join(FORMATS)}"
            )
        self.path = path
        self.format = detect_format(path) if format == "auto" else format
        self.skip_bad_lines = skip_bad_lines
        self.max_element_chars = max_element_chars
        self.stats = CorpusStats(path=str(path), format=self.format)

    def __iter__(self) -> Iterator[Passage]:
        to_passages = _RECORD_READERS[self.format]
        max_chars = self.max_element_chars
        if self.format == "dpr":
            records = _iter_tsv(self.path)
        elif self.format in _DOCUMENT_FORMATS:
            records = _iter_document(self.path, self.format, max_chars)
        else:
            records = _iter_records(self.path, max_chars)
        for line, record in records:
            self.stats.records += 1
            if isinstance(record, _SyntaxErrorRecord):
                self._bad(line, record.message)
                continue
            try:
                passages = to_passages(record)
            except _BadRecord as bad:
                self._bad(line, str(bad))
                continue
            for passage in passages:
                self.stats.passages += 1
                yield passage

    def _bad(self, line: int | None, reason: str) -> None:
        if not self.skip_bad_lines:
            raise CorpusFormatError(
                str(self.path),
                line,
                f"{reason} (format {self.format}); fix the record or pass --skip-bad-lines"
            )
        self.stats.skipped += 1
        if len(self.stats.errors) < _MAX_ERRORS_KEPT:
            where = self.path if line is None else f"{self.path}:{line}"
            self.stats.errors.append(f"{where}: {reason}")


def corpus_files(path: str | Path) -> list[Path]:
    """The corpus files `path` names: itself, or a folder's files in name order (hidden ones left out).

    A BEIR dataset folder (one with a corpus.jsonl) stays one corpus, as `CorpusReader` reads it; any
    other folder, e.g. BioASQ's ten `*_golden.json` batches, means every file in it.
    """
    path = Path(path)
    if not path.is_dir() or (path / "corpus.jsonl").is_file():
        return [path]
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise CorpusFormatError(str(path), None, "an empty folder; check the --corpus path")
    return files


def read_corpus(path: str | Path, format: str = "auto", skip_bad_lines: bool = False) -> Iterator[Passage]:
    """Stream the passages of a corpus file; see `CorpusReader` for the formats and errors."""
    return iter(CorpusReader(path, format=format, skip_bad_lines=skip_bad_lines))


def detect_format(path: str | Path) -> str:
    """Guess a corpus file's format from its name and its first record.

    Raises:
        CorpusFormatError: the first record matches no known format.
    """
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".tsv", ".csv")):
        return "dpr"
    with _open_text(path) as handle:
        is_array = _first_char(handle) == "["
    first = next(iter(_iter_records(path, _MAX_ELEMENT_CHARS)), None)
    if first is None:
        raise CorpusFormatError(str(path), None, "is empty; expected passages or QA contexts")
    line, record = first
    if isinstance(record, _SyntaxErrorRecord) and not is_array:  # perhaps one pretty-printed JSON object
        document = _read_document(path, _MAX_ELEMENT_CHARS, required=False)
        record = document if isinstance(document, dict) else record
    if isinstance(record, _SyntaxErrorRecord):
        raise CorpusFormatError(str(path), line, f"{record.message}; cannot detect the format")
    if not isinstance(record, dict):
        raise CorpusFormatError(str(path), line, f"expected a JSON object, got {type(record).__name__}")
    document = _document_format(record)
    if document:
        return document
    if "contexts" in record:
        return "ircot"
    if "context" in record:
        return "hotpotqa"
    if "_id" in record and "text" in record and not is_array:
        return "beir"
    if "title" in record and "text" in record and "id" not in record and "_id" not in record and is_array:
        return "2wiki"
    if "text" in record or "contents" in record:
        return "jsonl"
    raise CorpusFormatError(
        str(path), line,
        f"cannot tell the corpus format from the first record's keys {sorted(record)[:8]}; "
        f"pass --format (one of {', '.join(FORMATS)})",
    )


# ---------------------------------------------------------------------------------------------
# Record -> passages, one small function per format.


def _text_field(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise _BadRecord(f"missing `{key}`")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("id", "_id"):
        return str(value)
    if not isinstance(value, str):
        raise _BadRecord(f"`{key}` must be a string, got {type(value).__name__}")
    return value


def _require_object(record: Any) -> dict:
    if not isinstance(record, dict):
        raise _BadRecord(f"expected a JSON object, got {type(record).__name__}")
    return record


def _jsonl_passages(record: Any) -> list[Passage]:
    record = _require_object(record)
    key = "_id" if "_id" in record else "id"
    pid = _text_field(record, key, required=False).strip()
    title = _text_field(record, "title", required=False)
    if "text" in record:
        text = _text_field(record, "text")
    elif "contents" in record:
        text = _text_field(record, "contents")
        if "title" not in record:
            title, text = _split_contents(text)
    else:
        raise _BadRecord("missing `text` (or `contents`)")
    if not text.strip() and not title.strip():
        raise _BadRecord("empty passage: both `title` and `text` are blank")
    return [Passage(id=pid or passage_id(title, text), title=title, text=text)]


def _beir_passages(record: Any) -> list[Passage]:
    record = _require_object(record)
    pid = _text_field(record, "_id").strip()
    if not pid:
        raise _BadRecord("empty `_id`")
    title = _text_field(record, "title", required=False)
    return [Passage(id=pid, title=title, text=_text_field(record, "text"))]


def _split_contents(contents: str) -> tuple[str, str]:
    """FlashRAG/DPR-as-JSONL `contents`: `"<title>"\\n<text>`; anything else is all text."""
    head, sep, rest = contents.partition("\n")
    if sep and len(head) >= 2 and head.startswith('"') and head.endswith('"'):
        return head[1:-1], rest
    return "", contents


def _paragraph(title: Any, text: Any) -> Passage:
    if not isinstance(title, str) or not isinstance(text, str):
        raise _BadRecord("a paragraph's title and text must be strings")
    title, text = normalize_whitespace(title), normalize_whitespace(text)
    if not text:
        raise _BadRecord(f"empty paragraph text under title {title[:60]!r}")
    return Passage(id=passage_id(title, text), title=title, text=text)


def _hotpotqa_passages(record: Any) -> list[Passage]:
    context = _require_object(record).get("context")
    # The Hugging Face layout: {title: [..], sentences: [[..]]}.
    if isinstance(context, dict) and "title" in context:
        context = list(zip(context.get("title", []), context.get("sentences", []), strict=False))
    if not isinstance(context, list):
        raise _BadRecord("`context` must be a list of [title, [sentences]]")
    passages = []
    for item in context:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], list)):
            raise _BadRecord("each `context` item must be [title, [sentences]]")
        # HotpotQA sentences carry their own leading spaces: join without a separator.
        passages.append(_paragraph(item[0], "".join(s for s in item[1] if isinstance(s, str))))
    return passages


def _ircot_passages(record: Any) -> list[Passage]:
    contexts = _require_object(record).get("contexts")
    if not isinstance(contexts, list):
        raise _BadRecord("`contexts` must be a list of {title, paragraph_text}")
    passages = []
    for item in contexts:
        if not isinstance(item, dict) or "paragraph_text" not in item:
            raise _BadRecord("each `contexts` item needs `title` and `paragraph_text`")
        passages.append(_paragraph(item.get("title", ""), item["paragraph_text"]))
    return passages


def _2wiki_passages(record: Any) -> list[Passage]:
    record = _require_object(record)
    if "context" in record:  # 2Wiki's dev/train question files use HotpotQA's layout
        return _hotpotqa_passages(record)
    if "text" not in record:
        raise _BadRecord("missing `text`")
    return [_paragraph(record.get("title", ""), record["text"])]


def _document_format(record: dict) -> str | None:
    """pubmedqa or bioasq when `record` is such a file's whole JSON object, else None."""
    if isinstance(record.get("questions"), list):
        return "bioasq"
    first = next(iter(record.values()), None)
    if isinstance(first, dict) and "CONTEXTS" in first:
        return "pubmedqa"
    return None


def _pubmedqa_passages(record: Any) -> list[Passage]:
    pmid, item = record
    if not isinstance(item, dict) or "CONTEXTS" not in item:
        raise _BadRecord(f"PMID {pmid}: missing `CONTEXTS`")
    contexts = item["CONTEXTS"]
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise _BadRecord(f"PMID {pmid}: `CONTEXTS` must be a list of strings")
    text = normalize_whitespace(" ".join(contexts))
    if not text:
        raise _BadRecord(f"PMID {pmid}: empty `CONTEXTS`")
    return [Passage(id=f"pubmed-{pmid}", title="", text=text)]


def _bioasq_passages(record: Any) -> list[Passage]:
    question = _require_object(record)
    name = f"question {question.get('id', '?')}"
    snippets = question.get("snippets", [])
    if not isinstance(snippets, list):
        raise _BadRecord(f"{name}: `snippets` must be a list")
    passages = []
    for snippet in snippets:
        if not isinstance(snippet, dict) or not isinstance(snippet.get("text"), str):
            raise _BadRecord(f"{name}: each snippet needs a string `text`")
        text = normalize_whitespace(snippet["text"])
        if not text:
            continue  # a blank snippet carries nothing to retrieve
        document = snippet.get("document", "")
        pmid = document.rstrip("/").rsplit("/", 1)[-1] if isinstance(document, str) else ""
        title = f"PubMed {pmid}" if pmid else ""
        passages.append(Passage(id=passage_id(title, text), title=title, text=text))
    return passages


def _dpr_passages(row: list[str]) -> list[Passage]:
    if len(row) < 3:
        raise _BadRecord(f"expected 3 tab-separated columns (id, text, title), got {len(row)}")
    pid, text, title = row[0].strip(), row[1], row[2]
    if not pid:
        raise _BadRecord("empty id column")
    if not text.strip():
        raise _BadRecord("empty text column")
    return [Passage(id=pid, title=title, text=text)]


_RECORD_READERS = {
    "dpr": _dpr_passages,
    "jsonl": _jsonl_passages,
    "beir": _beir_passages,
    "hotpotqa": _hotpotqa_passages,
    "ircot": _ircot_passages,
    "2wiki": _2wiki_passages,
    "pubmedqa": _pubmedqa_passages,
    "bioasq": _bioasq_passages,
}


# ---------------------------------------------------------------------------------------------
# Containers: TSV rows, JSON lines, or the elements of one JSON array, each with its line number.


def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - returned to a with-block


def _first_char(handle: TextIO) -> str:
    while True:
        chunk = handle.read(4096)
        if not chunk:
            return ""
        stripped = chunk.lstrip()
        if stripped:
            return stripped[0]


def _iter_tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    # DPR text is quoted with "" escapes; some passages exceed csv's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    with _open_text(path) as handle:
        rows = csv.reader(handle, delimiter="\t")
        order = (0, 1, 2)
        for index, row in enumerate(rows):
            if index == 0 and [c.strip().lower() for c in row[:3]] in (["id", "text", "title"],
                                                                       ["id", "title", "text"]):
                names = [c.strip().lower() for c in row[:3]]
                order = (names.index("id"), names.index("text"), names.index("title"))
                continue
            if not row:
                continue
            line = rows.line_num
            yield line, ([row[i] for i in order] if len(row) >= 3 else row)


def _read_document(path: Path, max_chars: int, required: bool = True) -> Any:
    """The one JSON value a whole file holds (at most `max_chars` long).

    With `required=False` (format detection), a file that is too long or not one JSON value gives None.
    """
    with _open_text(path) as handle:
        text = handle.read(max_chars + 1)
    if len(text) > max_chars:
        if not required:
            return None
        raise CorpusFormatError(str(path), None, f"is longer than {max_chars} chars, the limit for a file read whole")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if not required:
            return None
        raise CorpusFormatError(str(path), error.lineno, f"invalid JSON: {error.msg}") from None


def _iter_document(path: Path, format: str, max_chars: int) -> Iterator[tuple[int | None, Any]]:
    """The records of a file holding one JSON object: PubMedQA's (PMID, item) pairs, BioASQ's questions."""
    document = _read_document(path, max_chars)
    if format == "bioasq":
        questions = document.get("questions") if isinstance(document, dict) else None
        if not isinstance(questions, list):
            raise CorpusFormatError(str(path), None, "expected a JSON object `{questions: [...]}` (BioASQ Task B)")
        yield from ((None, question) for question in questions)
        return
    if not isinstance(document, dict):
        raise CorpusFormatError(str(path), None, "expected a JSON object `{PMID: {CONTEXTS, ...}}` (PubMedQA)")
    yield from ((None, item) for item in document.items())


def _iter_records(path: Path, max_element_chars: int) -> Iterator[tuple[int, Any]]:
    with _open_text(path) as handle:
        is_array = _first_char(handle) == "["
    yield from (_iter_json_array(path, max_element_chars) if is_array else _iter_json_lines(path))


class _SyntaxErrorRecord:
    """Stands in for a JSON line that did not parse, so the reader can skip it or raise with its line."""

    def __init__(self, message: str) -> None:
        self.message = message


def _iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                record = _SyntaxErrorRecord(f"invalid JSON: {error.msg} at column {error.colno}")
            yield line_number, record


def _needs_more_input(error: json.JSONDecodeError, buffer_length: int) -> bool:
    """Whether a decode error may just be the element running past the end of the buffer."""
    # A truncated element fails at (or a few chars before) the buffer's end, except an unterminated
    # string, which is reported where the string starts.
    return error.msg.startswith("Unterminated string") or error.pos >= buffer_length - 16


def _iter_json_array(path: Path, max_element_chars: int) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for each element of a top-level JSON array, holding one element at a time."""
    decoder = json.JSONDecoder()
    buffer, position, line, at_eof = "", 0, 1, False
    with _open_text(path) as handle:

        def refill() -> None:
            nonlocal buffer, position, at_eof
            data = handle.read(_CHUNK_CHARS)
            at_eof = not data
            buffer, position = buffer[position:] + data, 0

        def next_char() -> str:
            """Advance past whitespace; return the next char ('' at end of file)."""
            nonlocal position, line
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n":
                    line += buffer[position] == "\n"
                    position += 1
                if position < len(buffer) or at_eof:
                    return buffer[position] if position < len(buffer) else ""
                refill()

        def fail(message: str, at_line: int | None = None) -> CorpusFormatError:
            reason = f"{message}; expected one JSON array of objects"
            return CorpusFormatError(str(path), at_line or line, reason)

        refill()
        if next_char() != "[":
            raise fail("expected `[`")
        position += 1
        state = "first"  # first: an element or `]`; element: an element; separator: `,` or `]`
        while True:
            char = next_char()
            if char == "":
                raise fail("the JSON array ends early (truncated file?)")
            if state != "element" and char == "]":
                return
            if state == "separator":
                if char != ",":
                    raise fail(f"expected `,` or `]` between elements, got {char!r}")
                position += 1
                state = "element"
                continue
            while True:  # decode one element, reading more input until it is complete
                try:
                    element, end = decoder.raw_decode(buffer, position)
                    if end < len(buffer) or at_eof:
                        break
                except json.JSONDecodeError as error:
                    if at_eof or not _needs_more_input(error, len(buffer)):
                        bad_line = line + buffer.count("\n", position, error.pos)
                        raise fail(f"invalid JSON: {error.msg}", bad_line) from None
                if len(buffer) - position > max_element_chars:
                    raise fail(f"an element is longer than {max_element_chars} chars (the streaming limit)")
                refill()
            yield line, element
            line += buffer.count("\n", position, end)
            position = end
            state = "separator"
