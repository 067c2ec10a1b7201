"""Hybrid retrieval: BM25 (tantivy) and dense (faiss) rankings fused by reciprocal rank.

    fused(d) = sum over rankings r containing d of 1 / (rrf_k + rank_r(d))      (rank from 1)

(Cormack, Clarke & Buettcher, SIGIR 2009). Rank fusion needs no score calibration between
BM25 and cosine similarity. The folder holds a tantivy index in `bm25/` and a dense index in
`dense/`; every write goes to both, in batches, under both writers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from retrieval._indexdir import prepare_dir, write_info
from retrieval.config import RetrieverConfig
from retrieval.dense_backend import BATCH, DenseRetriever
from retrieval.embedder import Embedder
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever
from retrieval.validation import check_k

__all__ = ["HybridRetriever", "reciprocal_rank_fusion"]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Passage]], k: int, rrf_k: int = 60) -> list[Passage]:
    """Fuse rankings (each best first) into the top `k` by RRF; the score is the fused score.

    Ties keep the order of first appearance (earlier rankings first), so results are deterministic.
    """
    fused: dict[str, float] = {}
    first_seen: dict[str, Passage] = {}
    for ranking in rankings:
        for rank, passage in enumerate(ranking, start=1):
            fused[passage.id] = fused.get(passage.id, 0.0) + 1.0 / (rrf_k + rank)
            first_seen.setdefault(passage.id, passage)
    best = sorted(fused, key=fused.__getitem__, reverse=True)[:k]  # sorted() is stable
    return [Passage(pid, first_seen[pid].title, first_seen[pid].text, fused[pid]) for pid in best]


class HybridRetriever:
    """BM25 + dense with reciprocal rank fusion.

    Args:
        path: the hybrid index folder (holds `bm25/` and `dense/`).
        bm25: the lexical retriever; dense: the dense retriever (built by `from_config`).
        rrf_k: fusion constant; rrf_depth: hits taken from each ranking before fusing.
    """

    backend = "hybrid"

    def __init__(self, path: str | Path, bm25: TantivyRetriever, dense: DenseRetriever, *, rrf_k: int = 60,
                 rrf_depth: int = 100) -> None:
        self.path = Path(path)
        self.bm25, self.dense = bm25, dense
        self.rrf_k, self.rrf_depth = rrf_k, rrf_depth

    @classmethod
    def from_config(cls, config: RetrieverConfig, embedder: Embedder | None = None) -> HybridRetriever:
        path = Path(config.index)
        if prepare_dir(path, cls.backend, config.create_if_missing) is None:
            write_info(path, cls.backend, parts=["bm25", "dense"])
        bm25 = TantivyRetriever.from_config(config, path / "bm25")
        dense = DenseRetriever.from_config(config, path / "dense", embedder=embedder)
        return cls(path, bm25, dense, rrf_k=config.rrf_k, rrf_depth=config.rrf_depth)

    def search(self, query: str, k: int = 10) -> list[Passage]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        check_k(k)
        depth = max(k, self.rrf_depth)
        lexical = self.bm25.search_many(queries, depth)
        semantic = self.dense.search_many(queries, depth)  # one embedding batch for all queries
        return [reciprocal_rank_fusion([a, b], k, self.rrf_k) for a, b in zip(lexical, semantic, strict=True)]

    def get(self, ids: Sequence[str]) -> list[Passage]:
        return self.bm25.get(ids)

    def count(self) -> int:
        return self.bm25.count()

    def add(self, passages: Iterable[Passage]) -> int:
        sent = 0
        with self.bm25.writing() as lexical, self.dense.writing() as semantic:
            batch: list[Passage] = []
            for passage in passages:
                lexical.add(passage)
                batch.append(passage)
                if len(batch) == BATCH:
                    semantic.add_batch(batch)
                    sent += len(batch)
                    batch = []
            semantic.add_batch(batch)
            sent += len(batch)
        return sent

    def delete(self, ids: Sequence[str]) -> int:
        self.dense.delete(ids)
        return self.bm25.delete(ids)

    def close(self) -> None:
        self.bm25.close()
        self.dense.close()
