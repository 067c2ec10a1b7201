"""Index corpus files into any backend with a progress bar and a final count."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from retrieval.base import Retriever
from retrieval.corpus import CorpusReader, CorpusStats, corpus_files
from retrieval.passage import Passage

__all__ = ["IndexReport", "index_corpus", "index_passages"]


@dataclass
class IndexReport:
    """What `index_corpus` did.

    Args:
        files: per-file reader statistics (records, passages, skipped, first errors).
        sent: passages sent to the index (repeats included).
        count_before / count_after: documents in the index before and after.
        seconds: wall time.
    """

    files: list[CorpusStats] = field(default_factory=list)
    sent: int = 0
    count_before: int = 0
    count_after: int = 0
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return sum(stats.skipped for stats in self.files)

    @property
    def new_documents(self) -> int:
        return self.count_after - self.count_before

    def to_dict(self) -> dict:
        return {
            "files": [vars(stats) for stats in self.files],
            "sent": self.sent,
            "skipped": self.skipped,
            "count_before": self.count_before,
            "count_after": self.count_after,
            "new_documents": self.new_documents,
            "seconds": round(self.seconds, 3),
        }


def index_passages(
    retriever: Retriever, passages: Iterable[Passage], progress: bool = True, total: int | None = None
) -> int:
    """Stream passages into `retriever.add` under a tqdm bar (stderr); returns how many were sent."""
    bar = tqdm(
        passages, desc="indexing", unit=" passages", total=total, disable=not progress, file=sys.stderr,
        mininterval=0.5,
    )
    with bar:
        return retriever.add(iter(bar))


def index_corpus(
    retriever: Retriever,
    paths: Sequence[str | Path],
    format: str = "auto",
    skip_bad_lines: bool = False,
    progress: bool = True,
) -> IndexReport:
    """Read every corpus file and add its passages to one index.

    Args:
        retriever: an open retriever (any backend).
        paths: corpus files, indexed in order into the same index; a folder means its files in name
            order (`corpus_files`).
        format: corpus format for all files, or `auto` per file.
        skip_bad_lines: skip malformed records (counted in the report) instead of raising.
        progress: show a progress bar on stderr.

    Returns:
        An `IndexReport`; a repeated id (the same paragraph under many questions) replaces the
        earlier copy, so `new_documents` can be smaller than `sent`.

    Example:
        >>> retriever = open_retriever(RetrieverConfig("artifacts/index"))  # doctest: +SKIP
        >>> index_corpus(retriever, ["corpus.jsonl"]).count_after           # doctest: +SKIP
    """
    started = time.perf_counter()
    files = [file for path in paths for file in corpus_files(path)]
    readers = [CorpusReader(file, format=format, skip_bad_lines=skip_bad_lines) for file in files]
    ensure_index = getattr(retriever, "ensure_index", None)
    if ensure_index is not None:  # a remote index (Elasticsearch) must exist before it can be counted
        ensure_index()
    report = IndexReport(files=[reader.stats for reader in readers], count_before=retriever.count())

    def all_passages() -> Iterator[Passage]:
        for reader in readers:
            yield from reader

    report.sent = index_passages(retriever, all_passages(), progress=progress)
    report.count_after = retriever.count()
    report.seconds = time.perf_counter() - started
    return report
