"""Retrieval benchmark on BEIR SciFact (and HotpotQA supporting-paragraph recall).

For bm25 (tantivy), dense (MiniLM + faiss flat) and hybrid (RRF of the two), side by side:
index time, p50/p99 single-query latency and nDCG@10 / recall@10 on the 300 SciFact test
queries; then the share of HotpotQA (IRCoT) questions with a supporting paragraph in the BM25
top 10. Published references: BEIR BM25 (Elasticsearch) 0.665, MTEB all-MiniLM-L6-v2 0.645.
The last line printed is one JSON object.

    .venv/bin/python bench/retrieval_bench.py [--skip-dense] [--device cuda] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# -- knobs -------------------------------------------------------------------------------------
K = 10
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCIFACT = "beir_scifact"
HOTPOT = "hotpotqa/ircot_hotpotqa_dev_subsampled.jsonl"
EMBED_BATCH = 64
# -----------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _evaluate(retriever, queries: list[tuple[str, str]], qrels: dict) -> dict:
    from retrieval import mean_metric, ndcg_at_k, recall_at_k

    latencies_ms, run = [], {}
    retriever.search(queries[0][1], K)  # warm-up (first query loads lazy state)
    for qid, text in queries:
        started = time.perf_counter()
        hits = retriever.search(text, K)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        run[qid] = [h.id for h in hits]
    return {
        "ndcg@10": round(mean_metric(run, qrels, ndcg_at_k, K), 4),
        "recall@10": round(mean_metric(run, qrels, recall_at_k, K), 4),
        "p50_ms": round(statistics.median(latencies_ms), 3),
        "p99_ms": round(_percentile(latencies_ms, 0.99), 3),
    }


def _timed_index(retriever, corpus: Path) -> float:
    from retrieval import index_corpus

    return index_corpus(retriever, [corpus], progress=True).seconds


def _hotpot_support_rate(work: Path) -> dict:
    from retrieval import TantivyRetriever, passage_id
    from retrieval.corpus import normalize_whitespace

    path = DATA / HOTPOT
    retriever = TantivyRetriever(work / "hotpot")
    started = time.perf_counter()
    _timed_index(retriever, path)
    index_s = time.perf_counter() - started
    hit = hit_all = hit_top2 = total = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            gold = {passage_id(c["title"], normalize_whitespace(c["paragraph_text"]))
                    for c in record["contexts"] if c.get("is_supporting")}
            if not gold:
                continue
            total += 1
            ranked = [p.id for p in retriever.search(record["question_text"], K)]
            hit += bool(gold & set(ranked))
            hit_all += gold <= set(ranked)
            hit_top2 += bool(gold & set(ranked[:2]))
    return {"questions": total, "support_in_top10": round(hit / total, 4),
            "all_support_in_top10": round(hit_all / total, 4), "support_in_top2": round(hit_top2 / total, 4),
            "passages": retriever.count(), "index_s": round(index_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-dense", action="store_true", help="bm25 only (no embedding)")
    parser.add_argument("--device", default="cpu", help="embedder device")
    args = parser.parse_args()

    from retrieval import DenseRetriever, Embedder, HybridRetriever, TantivyRetriever, read_qrels, read_queries

    scifact = DATA / SCIFACT
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    queries = [(qid, text) for qid, text in read_queries(scifact / "queries.jsonl") if qid in qrels]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="regrad-bench-") as tmp:
        work = Path(tmp)
        bm25 = TantivyRetriever(work / "bm25")
        bm25_index_s = _timed_index(bm25, scifact / "corpus.jsonl")
        results["bm25"] = {"index_s": round(bm25_index_s, 2), **_evaluate(bm25, queries, qrels)}
        print(f"bm25   {results['bm25']}", file=sys.stderr)
        if not args.skip_dense:
            embedder = Embedder(device=args.device, batch_size=EMBED_BATCH)
            dense = DenseRetriever(work / "dense", embedder=embedder)
            dense_index_s = _timed_index(dense, scifact / "corpus.jsonl")
            results["dense"] = {"index_s": round(dense_index_s, 2), **_evaluate(dense, queries, qrels)}
            print(f"dense  {results['dense']}", file=sys.stderr)
            # The hybrid reads both indexes just built; its index time is their sum.
            hybrid = HybridRetriever(work / "hybrid", bm25, dense)
            results["hybrid"] = {"index_s": round(bm25_index_s + dense_index_s, 2),
                                 **_evaluate(hybrid, queries, qrels)}
            print(f"hybrid {results['hybrid']}", file=sys.stderr)
        hotpot = _hotpot_support_rate(work)
        n_docs = bm25.count()

    print(f"\nSciFact test ({len(queries)} queries, {n_docs} docs), k={K}, this machine, 1 query at a time")
    print(f"{'backend':<8} {'index s':>8} {'p50 ms':>8} {'p99 ms':>8} {'nDCG@10':>8} {'R@10':>7}")
    for name, row in results.items():
        print(f"{name:<8} {row['index_s']:>8.2f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['ndcg@10']:>8.4f} {row['recall@10']:>7.4f}")
    print("references: BEIR BM25 (Elasticsearch) 0.665, MTEB all-MiniLM-L6-v2 0.645")
    print(f"HotpotQA (IRCoT) {hotpot['questions']} questions, {hotpot['passages']} unique paragraphs: "
          f"a supporting paragraph in BM25 top 10 for {hotpot['support_in_top10']:.1%}, in top 2 for "
          f"{hotpot['support_in_top2']:.1%}; all supporting paragraphs in top 10 for "
          f"{hotpot['all_support_in_top10']:.1%}")
    summary = {"bench": "retrieval", "dataset": "beir_scifact", "k": K, "cpu_threads": os.cpu_count(),
               **{f"{name}_{key}": value for name, row in results.items() for key, value in row.items()},
               **{f"hotpot_{key}": hotpot[key] for key in ("support_in_top10", "support_in_top2",
                                                           "all_support_in_top10")}}
    if "hybrid" in results:
        summary["hybrid_beats_both"] = results["hybrid"]["ndcg@10"] > max(results["bm25"]["ndcg@10"],
                                                                          results["dense"]["ndcg@10"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
