"""`regrad score`: re-score a predictions file and write scores.json, and scores.png beside it."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]

NAME = "score"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="re-score a predictions file (from `regrad evaluate`) and write scores.json",
        description="Score every line of a predictions file again with the current metrics (EM, F1, precision, "
        "recall per dataset and mode), print the table and write scores.json (the file `evaluate` writes) and a "
        "picture of it beside it (scores.png: EM and F1 per dataset, one bar per mode). Where a dataset has "
        "yes/no questions, a second table scores them apart from its short answers and shows how often the "
        "answers say \"yes\" against the golds (scores.json: `kinds`).",
    )
    p.add_argument("predictions", help="predictions file (JSON lines) written by `regrad evaluate`")
    p.add_argument("--output", help="scores file to write (default: scores.json beside the predictions)")
    p.add_argument("--against", metavar="PREDICTIONS",
                   help="another predictions file on the same questions (another learner, composition, dtype): "
                   "compare the two question by question, paired by id and mode: EM flips each way with "
                   "McNemar's exact p, the F1 difference with a paired bootstrap 95%% interval, and how many "
                   "answers changed; printed, and written to the scores file under `paired`")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed, with --against (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.evaluation.evaluate import format_mode_table
    from offline_tools.evaluation.kinds import format_kinds, kinds_of
    from offline_tools.evaluation.scoring import (
        read_predictions,
        rescore,
        scores_path_for,
        write_scores,
        write_scores_png,
    )

    predictions = read_predictions(args.predictions)
    comparison = None
    if args.against is not None:
        from offline_tools.evaluation.paired import compare

        comparison = compare(predictions, read_predictions(args.against), seed=args.seed,
                             names=(args.predictions, args.against))
    tables, kinds = rescore(predictions), kinds_of(predictions)
    errors = sum(1 for line in predictions if "error" in line)
    path = write_scores(args.output or scores_path_for(args.predictions), tables, source=args.predictions,
                        errors=errors, kinds=kinds, paired=comparison, against=args.against)
    picture = write_scores_png(path, tables)
    print(format_mode_table(tables))
    if by_kind := format_kinds(kinds):
        print(f"\n{by_kind}")
    if comparison is not None:
        from offline_tools.evaluation.paired import format_comparison

        print(f"\nA = {args.predictions}, B = {args.against}\n{format_comparison(comparison)}")
    print(f"{len(predictions)} predictions scored -> {path}, {picture}")
    return 0
