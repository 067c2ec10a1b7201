"""The embedded default backend: a tantivy BM25 index in a folder.

Fields: `id` (raw, stored), `title` and `text` (English analyzer, stored). The query mirrors
the reference's Elasticsearch `multi_match` of type `best_fields` with `tie_breaker` 0.5:

    score(doc) = max(title_score, text_score) + tie_breaker * (the other field's score)

where each field score is the BM25 sum over the analysed query terms. User text is never parsed
as query syntax: it is analysed into terms and each term becomes a term query, so quotes,
colons, brackets, `AND` or emoji search for what they are instead of raising.

Concurrency: one writer at a time per folder (tantivy's lock file, across processes); a writer
waits up to `lock_timeout_s` for it. `add` and `delete` commit before returning, and every search
reloads the reader (microseconds), so the next search in any process sees committed documents.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import tantivy

from retrieval._indexdir import prepare_dir, write_info
from retrieval.config import RetrieverConfig
from retrieval.errors import IndexLockedError, RetrievalError
from retrieval.passage import Passage, by_score_then_id, ties_past
from retrieval.validation import check_k, check_passage, clean_text

__all__ = ["TantivyRetriever", "english_analyzer"]

ANALYZER_NAME = "regrad_en"
MAX_QUERY_TERMS = 1024  # Lucene's default clause limit; longer queries keep their first terms
MAX_TOKEN_CHARS = 40  # tantivy's en_stem default: longer tokens are URLs, hashes, junk
COMMIT_EVERY = 100_000  # passages between commits while streaming a large corpus


def english_analyzer(remove_stopwords: bool = True) -> tantivy.TextAnalyzer:
    """Split on non-alphanumerics, drop long tokens, lowercase, drop stopwords, Snowball-stem.

    Close to Elasticsearch's `english` analyzer; dropping stopwords gains ~0.006 nDCG@10 on SciFact.
    """
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    builder = builder.filter(tantivy.Filter.remove_long(MAX_TOKEN_CHARS)).filter(tantivy.Filter.lowercase())
    if remove_stopwords:
        builder = builder.filter(tantivy.Filter.stopword("english"))
    return builder.filter(tantivy.Filter.stemmer("english")).build()


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, tokenizer_name=ANALYZER_NAME)
    builder.add_text_field("text", stored=True, tokenizer_name=ANALYZER_NAME)
    return builder.build()


class TantivyRetriever:
    """BM25 over an on-disk tantivy index (see the module docstring).

    Args:
        path: the index folder (created when missing and `create_if_missing`).
        create_if_missing: create an empty index instead of raising `IndexNotFoundError`.
        title_boost: title field weight relative to text.
        tie_breaker: `best_fields` tie breaker.
        remove_stopwords: analyzer setting for a NEW index (an existing one keeps its own).
        writer_heap_bytes: tantivy writer memory budget.
        lock_timeout_s: how long a write waits for another writer's lock.

    Example:
        >>> r = TantivyRetriever("artifacts/index")                       # doctest: +SKIP
        >>> r.add([Passage("p1", "Ed Wood", "Ed Wood was a filmmaker.")])  # doctest: +SKIP
        >>> r.search("who was ed wood", k=3)[0].id                         # doctest: +SKIP
        'p1'
    """

    backend = "tantivy"

    def __init__(
        self,
        path: str | Path,
        *,
        create_if_missing: bool = True,
        title_boost: float = 1.0,
        tie_breaker: float = 0.5,
        remove_stopwords: bool = True,
        writer_heap_bytes: int = 128_000_000,
        lock_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.title_boost = title_boost
        self.tie_breaker = tie_breaker
        self.writer_heap_bytes = writer_heap_bytes
        self.lock_timeout_s = lock_timeout_s
        info = prepare_dir(self.path, self.backend, create_if_missing)
        if info is None:
            self._index = tantivy.Index(_schema(), path=str(self.path), reuse=False)
            info = write_info(self.path, self.backend, remove_stopwords=remove_stopwords, stemmer="english")
        else:
            self._index = tantivy.Index.open(str(self.path))
        # The analyzer is part of the index: a search must analyse exactly as indexing did.
        self._analyzer = english_analyzer(bool(info.get("remove_stopwords", True)))
        self._index.register_tokenizer(ANALYZER_NAME, self._analyzer)
        self._schema = self._index.schema
        self._write_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: RetrieverConfig, path: str | Path | None = None) -> TantivyRetriever:
        return cls(
            path or config.index,
            create_if_missing=config.create_if_missing,
            title_boost=config.title_boost,
            tie_breaker=config.tie_breaker,
            remove_stopwords=config.remove_stopwords,
            writer_heap_bytes=config.writer_heap_bytes,
            lock_timeout_s=config.lock_timeout_s,
        )

    # -- reading --------------------------------------------------------------------------------

    def search(self, query: str, k: int = 10) -> list[Passage]:
        check_k(k)
        tantivy_query = self._build_query(query)
        if tantivy_query is None:
            return []
        searcher = self._searcher()
        # tantivy returns equal scores in segment order, which depends on how the index was written
        # (threads, commits); ordering ties by id makes every build of a corpus retrieve alike.
        limit = k + 1
        hits = searcher.search(tantivy_query, limit=limit).hits
        while ties_past([score for score, _ in hits], k, limit):
            limit *= 2
            hits = searcher.search(tantivy_query, limit=limit).hits
        kth = hits[min(k, len(hits)) - 1][0] if hits else 0.0  # hits below it are not read from disk
        return by_score_then_id([self._to_passage(searcher.doc(address), score) for score, address in hits
                                 if score >= kth], k)

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        return [self.search(query, k) for query in queries]

    def get(self, ids: Sequence[str]) -> list[Passage]:
        wanted = list(dict.fromkeys(clean_text(i) for i in ids))
        if not wanted:
            return []
        searcher = self._searcher()
        by_id = tantivy.Query.term_set_query(self._schema, "id", wanted)
        hits = searcher.search(by_id, limit=len(wanted)).hits
        found = {p.id: p for p in (self._to_passage(searcher.doc(address), 0.0) for _, address in hits)}
        return [found[i] for i in wanted if i in found]

    def count(self) -> int:
        return self._searcher().num_docs

    def analyze(self, text: str) -> list[str]:
        """The terms the index stores for `text` (lowercased, stopwords dropped, stemmed)."""
        return self._analyzer.analyze(clean_text(text))

    # -- writing --------------------------------------------------------------------------------

    def add(self, passages: Iterable[Passage]) -> int:
        with self.writing() as writer:
            for passage in passages:
                writer.add(passage)
        return writer.sent

    def delete(self, ids: Sequence[str]) -> int:
        existing = len(self.get(ids))
        with self.writing() as writer:
            for passage_id in ids:
                writer.delete(passage_id)
        return existing

    @contextlib.contextmanager
    def writing(self) -> Iterator[_Writer]:
        """Hold the index's writer for many adds; commit on exit (roll back on error), then reload.

        Example:
            >>> with retriever.writing() as writer:     # doctest: +SKIP
            ...     writer.add(Passage("p1", "Title", "Text"))
        """
        with self._write_lock:
            writer = _Writer(self._acquire_writer())
            try:
                yield writer
                writer.commit()
            except BaseException:
                writer.rollback()
                raise
            finally:
                writer.release()
        self._index.reload()

    def close(self) -> None:
        # tantivy holds no lock between writes; dropping the reader is all there is to do.
        self._index = None  # type: ignore[assignment]

    # -- helpers --------------------------------------------------------------------------------

    def _searcher(self) -> tantivy.Searcher:
        if self._index is None:
            raise RetrievalError(f"the index at {self.path} is closed; open a new retriever")
        self._index.reload()  # ~30 us; makes commits of other processes visible at once
        return self._index.searcher()

    def _build_query(self, query: str) -> tantivy.Query | None:
        terms = self.analyze(query)[:MAX_QUERY_TERMS]
        if not terms:
            return None
        per_field = []
        for field_name, boost in (("title", self.title_boost), ("text", 1.0)):
            should = tantivy.Occur.Should
            clauses = [(should, tantivy.Query.term_query(self._schema, field_name, term)) for term in terms]
            field_query = tantivy.Query.boolean_query(clauses)
            per_field.append(field_query if boost == 1.0 else tantivy.Query.boost_query(field_query, boost))
        return tantivy.Query.disjunction_max_query(per_field, tie_breaker=self.tie_breaker)

    def _acquire_writer(self) -> tantivy.IndexWriter:
        if self._index is None:
            raise RetrievalError(f"the index at {self.path} is closed; open a new retriever")
        started = time.monotonic()
        while True:
            try:
                return self._index.writer(heap_size=self.writer_heap_bytes)
            except ValueError as error:
                if "LockBusy" not in str(error):
                    raise
                waited = time.monotonic() - started
                if waited >= self.lock_timeout_s:
                    raise IndexLockedError(str(self.path), waited) from error
                time.sleep(0.05)

    @staticmethod
    def _to_passage(document: tantivy.Document, score: float) -> Passage:
        return Passage(
            id=document.get_first("id") or "",
            title=document.get_first("title") or "",
            text=document.get_first("text") or "",
            score=float(score),
        )


class _Writer:
    """A held tantivy writer: `add` replaces by id; commits every `COMMIT_EVERY` passages."""

    def __init__(self, writer: tantivy.IndexWriter) -> None:
        self._writer = writer
        self.sent = 0

    def add(self, passage: Passage) -> None:
        check_passage(passage, self.sent)
        passage_id = clean_text(passage.id)
        # Replace, never duplicate: the gradient store is keyed by id.
        self._writer.delete_documents_by_term("id", passage_id)
        title, text = clean_text(passage.title), clean_text(passage.text)
        self._writer.add_document(tantivy.Document(id=passage_id, title=title, text=text))
        self.sent += 1
        if self.sent % COMMIT_EVERY == 0:
            self._writer.commit()  # a crash loses at most COMMIT_EVERY passages; a re-run upserts

    def delete(self, passage_id: str) -> None:
        self._writer.delete_documents_by_term("id", clean_text(passage_id))

    def commit(self) -> None:
        self._writer.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.rollback()

    def release(self) -> None:
        # Waiting for merges consumes the writer, which releases the folder's lock for others.
        with contextlib.suppress(RuntimeError):
            self._writer.wait_merging_threads()
