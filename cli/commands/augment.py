"""`regrad augment`: retrieve the top-k passages of each question of a dataset split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from offline_tools.datasets import DATASETS, SPLIT_CHOICES
from offline_tools.errors import InputFileError, UsageError

NAME = "augment"
BACKENDS = ("tantivy", "elasticsearch", "dense", "hybrid")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="retrieve top-k passages for each question -> data_aug/<dataset>/<split>.jsonl",
        description="Retrieve the top-k passages of every question of a dataset split and append them, "
        "one JSON line per question, to data_aug/<dataset>/<split>.jsonl. Rerunning resumes.",
    )
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset name")
    p.add_argument("--data-path", required=True, help="dataset file, or folder in the published layout")
    p.add_argument("--index", required=True, help="index folder (tantivy/dense/hybrid) or ES index name")
    p.add_argument("--backend", default="tantivy", choices=BACKENDS, help="retrieval backend (default tantivy)")
    p.add_argument("--es-url", default=None, help="Elasticsearch URL, e.g. http://localhost:9200")
    p.add_argument(
        "--split",
        default="train",
        choices=SPLIT_CHOICES,
        help="split: the published file in a folder; otherwise train/dev are carved by a hash of the id "
        "(see --dev-fraction) and test/all take everything (default train)",
    )
    p.add_argument("--dev-fraction", type=float, default=0.25, help="dev share of carved splits (default 0.25)")
    p.add_argument("--top-k", type=int, default=3, help="passages per question (default 3)")
    p.add_argument("--start", type=int, default=0, help="first question of the split to do (0-based)")
    p.add_argument("--end", type=int, default=None, help="stop before this question (default: all)")
    p.add_argument("--batch-size", type=int, default=32, help="questions per retrieval call (default 32)")
    p.add_argument("--output", default=None, help="output .jsonl (default data_aug/<dataset>/<split>.jsonl)")
    p.add_argument(
        "--answerable",
        action="store_true",
        help="write only questions with a gold answer in one of their top-k passages (questions asked of a "
        "corpus not built for them, e.g. 2Wiki's; yes/no and multiple-choice questions are dropped)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.datasets import load_split
    from offline_tools.datasets.augment import augment_records, default_output
    from retrieval import RetrieverConfig, open_retriever

    if args.start < 0 or (args.end is not None and args.end < args.start):
        raise UsageError(f"--start {args.start} / --end {args.end}: expected 0 <= start <= end")
    if args.backend == "elasticsearch" and not args.es_url:
        raise UsageError("--backend elasticsearch needs --es-url, e.g. --es-url http://localhost:9200")
    if args.backend != "elasticsearch" and not Path(args.index).exists():
        raise InputFileError(args.index, "index folder not found; build it with `regrad index`")

    records = load_split(args.dataset, args.data_path, args.split, args.dev_fraction)
    sliced = records[args.start : args.end]
    output = Path(args.output) if args.output else default_output(args.dataset, args.split)

    retriever = open_retriever(
        RetrieverConfig(index=args.index, backend=args.backend, es_url=args.es_url, create_if_missing=False)
    )
    try:
        report = augment_records(
            sliced,
            retriever,
            output,
            top_k=args.top_k,
            batch_size=args.batch_size,
            show_progress=not args.no_progress,
            answerable=args.answerable,
        )
    finally:
        retriever.close()
    print(json.dumps({"dataset": args.dataset, "split": args.split, "split_size": len(records), **report.to_dict()}))
    return 0
