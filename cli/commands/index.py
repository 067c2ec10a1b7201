"""`regrad index`: build or extend a retrieval index from corpus files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from offline_tools.errors import InputFileError, UsageError

__all__ = ["register", "run", "check_embedder_arg"]

NAME = "index"
BACKENDS = ("tantivy", "elasticsearch", "dense", "hybrid")
FORMATS = ("auto", "dpr", "jsonl", "beir", "hotpotqa", "ircot", "2wiki", "pubmedqa", "bioasq")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="index corpus files (DPR TSV, JSONL, BEIR, HotpotQA, IRCoT, 2Wiki, PubMedQA, BioASQ) for retrieval",
        description="Stream passages from corpus files into a retrieval index. Re-running with the same "
        "files replaces passages by id (never duplicates), so an interrupted run can simply be repeated.",
    )
    p.add_argument("--corpus", required=True, action="append", metavar="FILE",
                   help="corpus file (repeat to index several files into one index); a folder means every "
                   "file in it, in name order (a BEIR folder: its corpus.jsonl)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="corpus format (default: detect per file)")
    p.add_argument("--index", required=True, help="index folder (tantivy/dense/hybrid) or ES index name")
    p.add_argument("--backend", default="tantivy", choices=BACKENDS, help="retrieval backend (default tantivy)")
    p.add_argument("--es-url", default=None, help="Elasticsearch URL, e.g. http://localhost:9200")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="skip malformed records (counted and reported) instead of stopping")
    p.add_argument("--dense-index", default="flat", help="faiss index for dense/hybrid: flat, ivf<n>, hnsw<M>")
    p.add_argument("--embedder", default=None, metavar="PATH",
                   help="sentence-transformers model folder that embeds passages for dense/hybrid (default: "
                   "the bundled all-MiniLM-L6-v2); its pooling, Normalize module, max_seq_length and "
                   "document prompt are honoured, and the index records the folder for `regrad search`")
    p.add_argument("--device", default="cpu", help="embedder device for dense/hybrid (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def check_embedder_arg(args: argparse.Namespace) -> None:
    """`--embedder` only means something for dense/hybrid, and must name a folder."""
    if args.embedder is None:
        return
    if args.backend not in ("dense", "hybrid"):
        raise UsageError(f"--embedder applies to --backend dense or hybrid, not {args.backend}")
    if not Path(args.embedder).is_dir():
        raise InputFileError(args.embedder, "embedder folder not found; pass a sentence-transformers model folder")


def run(args: argparse.Namespace) -> int:
    from retrieval import CorpusFormatError, RetrieverConfig, RetrieverConfigError, index_corpus, open_retriever

    if args.backend == "elasticsearch" and not args.es_url:
        raise UsageError("--backend elasticsearch needs --es-url, e.g. --es-url http://localhost:9200")
    check_embedder_arg(args)
    try:
        config = RetrieverConfig(index=args.index, backend=args.backend, es_url=args.es_url,
                                 dense_index=args.dense_index, device=args.device, embedder_path=args.embedder)
    except RetrieverConfigError as error:
        raise UsageError(f"{error} (from the command-line options)") from error
    retriever = open_retriever(config)
    try:
        report = index_corpus(retriever, args.corpus, format=args.format, skip_bad_lines=args.skip_bad_lines,
                              progress=not args.no_progress)
    except CorpusFormatError as error:
        raise InputFileError(error.path, error.reason, error.line) from error
    finally:
        retriever.close()
    for stats in report.files:
        if stats.skipped:
            print(f"regrad: skipped {stats.skipped} malformed records in {stats.path}; first: {stats.errors[0]}",
                  file=sys.stderr)
    if args.json:
        print(json.dumps({"index": args.index, "backend": args.backend, **report.to_dict()}))
    else:
        print(f"indexed {report.sent} passages from {len(report.files)} file(s) into {args.index} "
              f"({args.backend}) in {report.seconds:.1f} s: {report.count_after} documents "
              f"(+{report.new_documents}), {report.skipped} skipped")
    return 0
