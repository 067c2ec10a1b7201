"""Retriever configuration: which backend, where its index lives, and its knobs.

Building a config imports nothing heavy; `__post_init__` rejects bad values naming the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Literal

from retrieval.errors import RetrieverConfigError

__all__ = ["RetrieverConfig", "BACKENDS", "DENSE_INDEX_PATTERN"]

BACKENDS = ("tantivy", "elasticsearch", "dense", "hybrid")
# faiss index kinds: exact inner product, IVF with <nlist> cells, HNSW with <M> links per node.
DENSE_INDEX_PATTERN = re.compile(r"^(flat|ivf[1-9][0-9]*|hnsw[1-9][0-9]*)$")
# Elasticsearch index names: lowercase, none of \ / * ? " < > | , # : space, not starting with - _ +.
_ES_INDEX_NAME = re.compile(r'^[^-_+A-Z\\/*?"<>|,#: ][^A-Z\\/*?"<>|,#: ]{0,254}$')


@dataclass
class RetrieverConfig:
    """Args:
    index: index folder (tantivy, dense, hybrid) or index name (elasticsearch).
    backend: `tantivy` (default, embedded BM25), `elasticsearch`, `dense` (faiss + MiniLM) or
        `hybrid` (tantivy BM25 + dense, fused by reciprocal rank).
    create_if_missing: create an empty index when none exists (False: raise `IndexNotFoundError`).
    title_boost: weight of the title field relative to the text field in BM25 (1.0 = the reference).
    tie_breaker: `best_fields` tie breaker: score = best field + tie_breaker * the other fields.
    remove_stopwords: drop English stopwords at index and query time (as Elasticsearch's `english`).
    writer_heap_bytes: tantivy writer memory budget.
    lock_timeout_s: how long a write waits for another writer's lock before failing.
    es_url: Elasticsearch URL, e.g. `http://localhost:9200` (required for `elasticsearch`).
    es_request_timeout_s: per-request timeout for Elasticsearch.
    es_max_retries: client retries on connection errors and timeouts (bulk: on 429 too).
    es_number_of_shards: primary shards of a created ES index.
    es_number_of_replicas: replicas of a created ES index (0 keeps a single node green).
    es_chunk_size: documents per bulk request.
    embedder_path: sentence-transformers model folder for `dense`/`hybrid`; its pooling, Normalize
        module, max_seq_length and query/document prompts are honoured (see `retrieval.embedder`).
        None = the folder an existing index was built with, else the bundled all-MiniLM-L6-v2.
    embed_batch_size: passages per embedding forward pass.
    embed_max_tokens: inputs are truncated to this many tokens before embedding; None = the model's
        `max_seq_length` (sentence_bert_config.json; 256 for all-MiniLM-L6-v2).
    device: torch device for the embedder (`cpu`, `cuda`).
    dense_index: faiss index kind: `flat` (exact), `ivf<nlist>` or `hnsw<M>`.
    rrf_k: reciprocal rank fusion constant: score = sum over rankings of 1 / (rrf_k + rank).
    rrf_depth: how many hits of each ranking are fused.
    """

    index: str
    backend: Literal["tantivy", "elasticsearch", "dense", "hybrid"] = "tantivy"
    create_if_missing: bool = True
    title_boost: float = 1.0
    tie_breaker: float = 0.5  # as the authors' research code's Elasticsearch query
    remove_stopwords: bool = True
    writer_heap_bytes: int = 128_000_000
    lock_timeout_s: float = 30.0
    es_url: str | None = None
    es_request_timeout_s: float = 30.0
    es_max_retries: int = 3
    es_number_of_shards: int = 1
    es_number_of_replicas: int = 0
    es_chunk_size: int = 500
    embedder_path: str | None = None
    embed_batch_size: int = 64
    embed_max_tokens: int | None = None  # None = the model folder's max_seq_length
    device: str = "cpu"
    dense_index: str = "flat"
    rrf_k: int = 60  # the constant of Cormack et al. (2009); robust across collections
    rrf_depth: int = 100

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            known = ", ".join(BACKENDS)
            raise RetrieverConfigError("backend", f"must be one of {known}; got {self.backend!r}")
        if not isinstance(self.index, str) or not self.index.strip():
            raise RetrieverConfigError("index", f"must name an index folder or ES index; got {self.index!r}")
        if self.backend == "elasticsearch":
            if not self.es_url or not re.match(r"^https?://", self.es_url):
                raise RetrieverConfigError(
                    "es_url", f"must be an http(s) URL such as http://localhost:9200; got {self.es_url!r}"
                )
            if not _ES_INDEX_NAME.match(self.index):
                raise RetrieverConfigError(
                    "index",
                    "must be a valid Elasticsearch index name (lowercase, no spaces or \\/*?\"<>|,#:, "
                    f"not starting with -, _ or +); got {self.index!r}",
                )
        _positive(self, "title_boost", "es_request_timeout_s", "writer_heap_bytes", "embed_batch_size",
                  "rrf_depth", "es_number_of_shards", "es_chunk_size")
        if self.embed_max_tokens is not None:
            _positive(self, "embed_max_tokens")
        if isinstance(self.embedder_path, os.PathLike):
            self.embedder_path = os.fspath(self.embedder_path)
        if self.embedder_path is not None and (not isinstance(self.embedder_path, str)
                                               or not self.embedder_path.strip()):
            raise RetrieverConfigError(
                "embedder_path", f"must be a model folder path or None; got {self.embedder_path!r}"
            )
        if not 0.0 <= self.tie_breaker <= 1.0:
            raise RetrieverConfigError("tie_breaker", f"must be in [0, 1]; got {self.tie_breaker!r}")
        if self.writer_heap_bytes < 15_000_000:
            raise RetrieverConfigError(
                "writer_heap_bytes", f"must be >= 15000000 (tantivy's minimum); got {self.writer_heap_bytes}"
            )
        for name in ("lock_timeout_s", "es_max_retries", "es_number_of_replicas", "rrf_k"):
            if getattr(self, name) < 0:
                raise RetrieverConfigError(name, f"must be >= 0; got {getattr(self, name)!r}")
        if not DENSE_INDEX_PATTERN.match(self.dense_index):
            raise RetrieverConfigError(
                "dense_index",
                f"must be `flat`, `ivf<nlist>` or `hnsw<M>` (e.g. ivf1024); got {self.dense_index!r}",
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _positive(config: RetrieverConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise RetrieverConfigError(name, f"must be a positive number; got {value!r}")
