"""`regrad search`: query an index with one question, or run a BEIR query file into a run file."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from cli.commands.index import check_embedder_arg
from offline_tools.errors import InputFileError, UsageError

__all__ = ["register", "run"]

NAME = "search"
BACKENDS = ("tantivy", "elasticsearch", "dense", "hybrid")
BATCH = 256  # queries per search_many call


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="search an index: one --query, or a BEIR --queries file -> one JSON line per query",
        description="Search a retrieval index. With --queries (BEIR queries.jsonl: _id, text) write one JSON "
        'line per query, {"query_id": ..., "hits": [{"id": ..., "score": ...}]}, to --output (default '
        "stdout); with --qrels also report nDCG@k and recall@k over the judged queries.",
    )
    p.add_argument("--index", required=True, help="index folder (tantivy/dense/hybrid) or ES index name")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="retrieval backend (default: the one that built --index, else tantivy)")
    p.add_argument("--es-url", default=None, help="Elasticsearch URL, e.g. http://localhost:9200")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--query", help="one query text")
    source.add_argument("--queries", metavar="FILE", help="BEIR queries.jsonl (one {_id, text} per line)")
    p.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--output", default="-", metavar="FILE", help="run file for --queries (default stdout)")
    p.add_argument("--qrels", metavar="FILE",
                   help="BEIR qrels TSV: search only the judged queries and report nDCG@k and recall@k")
    p.add_argument("--json", action="store_true", help="with --query: print hits as one JSON object")
    p.add_argument("--embedder", default=None, metavar="PATH",
                   help="sentence-transformers model folder that embeds queries for dense/hybrid (default: the "
                   "folder the index was built with, else the bundled all-MiniLM-L6-v2); its query prompt, "
                   "pooling and normalisation are honoured, and it must match the one that built the index")
    p.add_argument("--device", default="cpu", help="embedder device for dense/hybrid (cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retrieval import RetrieverConfig, RetrieverConfigError, backend_of, open_retriever

    if args.backend is None:
        args.backend = "elasticsearch" if args.es_url else (backend_of(args.index) or "tantivy")
    if not 1 <= args.k <= 10_000:
        raise UsageError(f"--k {args.k}: expected 1 to 10000 hits per query")
    if args.backend == "elasticsearch" and not args.es_url:
        raise UsageError("--backend elasticsearch needs --es-url, e.g. --es-url http://localhost:9200")
    if args.backend != "elasticsearch" and not Path(args.index).is_dir():
        raise InputFileError(args.index, "index folder not found; build it with `regrad index --corpus FILE`")
    check_embedder_arg(args)
    try:
        config = RetrieverConfig(index=args.index, backend=args.backend, es_url=args.es_url, device=args.device,
                                 embedder_path=args.embedder, create_if_missing=False)
    except RetrieverConfigError as error:
        raise UsageError(f"{error} (from the command-line options)") from error
    retriever = open_retriever(config)
    try:
        if args.query is not None:
            _print_hits(args.query, retriever.search(args.query, args.k), args.json)
        else:
            _run_queries(retriever, args)
    finally:
        retriever.close()
    return 0


def _print_hits(query: str, hits: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"query": query, "hits": [hit.to_dict() for hit in hits]}, ensure_ascii=False))
        return
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>3}  {hit.score:8.3f}  {hit.id}  {hit.title[:60]}  |  {hit.text[:80]}")
    if not hits:
        print("(no hits)", file=sys.stderr)


def _run_queries(retriever, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from retrieval import CorpusFormatError, mean_metric, ndcg_at_k, read_qrels, read_queries, recall_at_k

    try:
        queries = list(read_queries(args.queries))
        qrels = read_qrels(args.qrels) if args.qrels else None
    except FileNotFoundError as error:
        raise InputFileError(error.filename, "no such file") from error
    except CorpusFormatError as error:
        raise InputFileError(error.path, error.reason, error.line) from error
    if qrels is not None:
        queries = [(qid, text) for qid, text in queries if qid in qrels]
    run: dict[str, list[str]] = {}
    to_file = args.output != "-"
    with (open(args.output, "w", encoding="utf-8") if to_file else nullcontext(sys.stdout)) as out, tqdm(
        total=len(queries), desc="searching", unit=" queries", disable=args.no_progress, file=sys.stderr
    ) as bar:
        for start in range(0, len(queries), BATCH):
            batch = queries[start:start + BATCH]
            for (qid, _), hits in zip(batch, retriever.search_many([t for _, t in batch], args.k), strict=True):
                out.write(json.dumps({"query_id": qid, "hits": [{"id": h.id, "score": h.score} for h in hits]}))
                out.write("\n")
                run[qid] = [h.id for h in hits]
            bar.update(len(batch))
    if qrels is not None:
        summary = {
            "queries": len(run),
            f"ndcg@{args.k}": round(mean_metric(run, qrels, ndcg_at_k, args.k), 4),
            f"recall@{args.k}": round(mean_metric(run, qrels, recall_at_k, args.k), 4),
        }
        print(json.dumps(summary), file=sys.stdout if to_file else sys.stderr)
