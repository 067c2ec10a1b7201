"""`regrad synth`: write the controlled knowledge-injection benchmark (invented people and their facts)."""

from __future__ import annotations

import argparse
import json

from offline_tools.errors import UsageError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic knowledge-injection benchmark (corpus + train/dev/test questions)",
        description="Invented people with several attributes, each stated and asked in several phrasings. "
        "People are split into train/dev/test; one passage phrasing and one question phrasing per attribute "
        "appear in test only. Closed-book accuracy is about 0 by construction. Deterministic by --seed.",
    )
    p.add_argument("--output", required=True, help="folder for corpus.jsonl, {train,dev,test}.jsonl, synth.json")
    p.add_argument("--train-people", type=int, default=2000, help="invented people in train (default 2000)")
    p.add_argument("--dev-people", type=int, default=40, help="invented people in dev (default 40)")
    p.add_argument("--test-people", type=int, default=60,
                   help="invented people in test, stated and asked in held-out phrasings (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.synth import SynthConfig, write_benchmark

    try:
        config = SynthConfig(train_people=args.train_people, dev_people=args.dev_people,
                             test_people=args.test_people, seed=args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from error
    manifest = write_benchmark(args.output, config)
    print(json.dumps({"output": args.output, "passages": manifest["passages"], "questions": manifest["questions"]}))
    return 0
