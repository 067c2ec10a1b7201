"""Retrieval evaluation in the BEIR way: queries, qrels, runs, nDCG@k and recall@k.

nDCG@k uses graded gains `rel / log2(rank + 1)` (rank from 1) and the ideal ordering of the
query's judged documents, as `pytrec_eval` does for BEIR; queries without positive judgements
are left out; the mean is taken over the remaining queries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from retrieval.errors import CorpusFormatError

__all__ = ["read_queries", "read_qrels", "read_run", "ndcg_at_k", "recall_at_k", "mean_metric"]


def read_queries(path: str | Path) -> Iterator[tuple[str, str]]:
    """(query_id, text) from BEIR `queries.jsonl` (`_id`/`id`, `text`/`query`/`question`), streamed."""
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusFormatError(str(path), line_number, f"invalid JSON: {error.msg}") from None
            if not isinstance(record, dict):
                raise CorpusFormatError(str(path), line_number, "expected a JSON object per line")
            query_id = record.get("_id", record.get("id", record.get("query_id")))
            text = record.get("text", record.get("query", record.get("question")))
            if query_id is None or not isinstance(text, str):
                reason = "a query needs `_id` (or `id`) and `text` (or `query`, `question`)"
                raise CorpusFormatError(str(path), line_number, reason)
            yield str(query_id), text


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (`query-id<TAB>corpus-id<TAB>score`, header optional) -> {qid: {doc_id: grade}}."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            columns = line.rstrip("\r\n").split("\t")
            if not line.strip() or (line_number == 1 and columns[0] == "query-id"):
                continue
            if len(columns) != 3:
                reason = f"expected 3 tab-separated columns, got {len(columns)}"
                raise CorpusFormatError(str(path), line_number, reason)
            try:
                grade = int(columns[2])
            except ValueError:
                reason = f"score {columns[2]!r} is not an integer"
                raise CorpusFormatError(str(path), line_number, reason) from None
            qrels.setdefault(columns[0], {})[columns[1]] = grade
    return qrels


def read_run(path: str | Path) -> dict[str, list[str]]:
    """A `regrad search --output` file -> {query_id: [doc ids, best first]}."""
    run: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                run[str(record["query_id"])] = [str(hit["id"]) for hit in record["hits"]]
    return run


def ndcg_at_k(ranked_ids: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking against graded judgements (0.0 when nothing is relevant)."""
    dcg = sum(judgements.get(doc_id, 0) / math.log2(rank + 2) for rank, doc_id in enumerate(ranked_ids[:k]))
    ideal = sorted((g for g in judgements.values() if g > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked_ids: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    relevant = {doc_id for doc_id, grade in judgements.items() if grade > 0}
    return len(relevant.intersection(ranked_ids[:k])) / len(relevant) if relevant else 0.0


def mean_metric(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], metric=ndcg_at_k, k: int = 10
) -> float:
    """Mean of `metric` over the judged queries (a judged query missing from the run scores 0)."""
    judged = [qid for qid, judgements in qrels.items() if any(g > 0 for g in judgements.values())]
    if not judged:
        return 0.0
    return sum(metric(run.get(qid, []), qrels[qid], k) for qid in judged) / len(judged)
