"""Retrieval: find passages for a question; build and update the index they come from.

Primary API (synchronous; every backend implements the `Retriever` protocol):

    from retrieval import RetrieverConfig, open_retriever, Passage

    retriever = open_retriever(RetrieverConfig(index="artifacts/index"))          # tantivy (default)
    retriever.add([Passage(id="p1", title="Ed Wood", text="Ed Wood was ...")])   # committed on return
    hits = retriever.search_many(["who was Ed Wood?"], k=3)                      # list[list[Passage]]
    retriever.get(["p1"]); retriever.count(); retriever.close()

Backends (`RetrieverConfig.backend`): `tantivy` (embedded BM25, a folder), `elasticsearch`
(`es_url` + index name), `dense` (faiss over all-MiniLM-L6-v2), `hybrid` (BM25 + dense, RRF).

For the service (asyncio):
- every backend: call the sync methods through `await asyncio.to_thread(retriever.search_many,
  queries, k)`; they are thread-safe (tantivy, dense, hybrid: searches run in parallel; writes are
  serialised, committed and visible to the next search, also across processes; elasticsearch: the
  client is thread-safe). Constructing an Elasticsearch retriever makes no request (a service can
  start before ES is up).
- Errors: `BackendUnavailableError` (ES unreachable / overloaded; has `retry_after_s`) -> 503 +
  Retry-After; `IndexNotFoundError` (only with `create_if_missing=False`; otherwise a missing ES
  index reads as empty until the first `add` creates it) -> 503; `RetrievalError` is the base of all.
  Any query string is accepted: no match gives `[]`, never an exception.

Corpus files: `CorpusReader(path, format="auto", skip_bad_lines=False)` streams `Passage`s from DPR
TSV, JSONL, BEIR, HotpotQA, IRCoT and 2Wiki files; `index_corpus(retriever, paths)` indexes them
with a progress bar. Paragraphs without ids get `passage_id(title, text)`, stable across files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.base import Retriever
from retrieval.config import BACKENDS, RetrieverConfig
from retrieval.corpus import FORMATS, CorpusReader, CorpusStats, detect_format, read_corpus
from retrieval.errors import (
    BackendError,
    BackendUnavailableError,
    CorpusFormatError,
    IndexingError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    RetrievalError,
    RetrieverConfigError,
)
from retrieval.evaluation import mean_metric, ndcg_at_k, read_qrels, read_queries, read_run, recall_at_k
from retrieval.factory import backend_of, open_retriever
from retrieval.indexing import IndexReport, index_corpus, index_passages
from retrieval.passage import Passage, passage_id

if TYPE_CHECKING:
    from retrieval.dense_backend import DenseRetriever
    from retrieval.elasticsearch_backend import ElasticsearchRetriever
    from retrieval.embedder import Embedder
    from retrieval.hybrid_backend import HybridRetriever, reciprocal_rank_fusion
    from retrieval.tantivy_backend import TantivyRetriever

__all__ = [
    "Passage",
    "passage_id",
    "Retriever",
    "RetrieverConfig",
    "BACKENDS",
    "open_retriever",
    "backend_of",
    "TantivyRetriever",
    "ElasticsearchRetriever",
    "DenseRetriever",
    "HybridRetriever",
    "Embedder",
    "reciprocal_rank_fusion",
    "CorpusReader",
    "CorpusStats",
    "read_corpus",
    "detect_format",
    "FORMATS",
    "IndexReport",
    "index_corpus",
    "index_passages",
    "read_queries",
    "read_qrels",
    "read_run",
    "ndcg_at_k",
    "recall_at_k",
    "mean_metric",
    "RetrievalError",
    "RetrieverConfigError",
    "CorpusFormatError",
    "IndexNotFoundError",
    "IndexLockedError",
    "IndexMismatchError",
    "BackendUnavailableError",
    "BackendError",
    "IndexingError",
]

# Backends load on first use: the tantivy path never imports torch, faiss or the ES client.
_LAZY = {
    "TantivyRetriever": "retrieval.tantivy_backend",
    "ElasticsearchRetriever": "retrieval.elasticsearch_backend",
    "DenseRetriever": "retrieval.dense_backend",
    "HybridRetriever": "retrieval.hybrid_backend",
    "reciprocal_rank_fusion": "retrieval.hybrid_backend",
    "Embedder": "retrieval.embedder",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
