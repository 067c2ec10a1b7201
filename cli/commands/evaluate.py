"""`regrad evaluate`: answer augmented questions over HTTP (or in-process) and score them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli.commands.serve import add_settings_arguments, build_settings
from offline_tools.errors import UsageError
from offline_tools.evaluation.evaluate import MODES as _MODES

__all__ = ["register", "run"]

NAME = "evaluate"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        NAME,
        help="send augmented questions to the service and print EM/F1 per dataset and mode",
        description="Answer every question of the augmented files through a running service (--url) or an "
        "in-process engine (--in-process), write predictions.jsonl and print the score table.",
    )
    p.add_argument("--data", action="append", required=True, metavar="JSONL",
                   help="augmented file data_aug/<dataset>/<split>.jsonl (repeat for several)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="service base URL, e.g. http://127.0.0.1:8000")
    target.add_argument("--in-process", action="store_true",
                        help="no server: build the engine here (its settings as for `regrad serve`)")
    p.add_argument("--mode", action="append", choices=[*_MODES, "all"],
                   help="mode to evaluate; repeat for several, or `all` (default regrad). regrad_shift is the "
                   "control: regrad with the passages retrieved for another question of the file")
    p.add_argument("--output", required=True, help="predictions file to write (JSON lines)")
    p.add_argument("--scores", help="scores file to write (default: scores.json beside --output); scores.png, "
                   "EM and F1 per dataset and mode, goes beside it")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight over HTTP (default 8)")
    p.add_argument("--limit", type=int, help="only the first N questions of each file")
    p.add_argument("--top-k", type=int, default=3, help="passages per question (default 3)")
    p.add_argument("--gamma", type=float, default=1.0, help="gradient scale (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="answer length limit (default 20)")
    p.add_argument("--composition", metavar="SPEC",
                   help="how each question's passage gradients are combined: sum, softmax[:T] (weights from the "
                   "retrieval scores) or likelihood[:T] (from the base model's likelihood of the question given "
                   "each passage); default: the server's (REGRAD_COMPOSITION)")
    p.add_argument("--stop-bias", type=float, metavar="B",
                   help="added to the end-of-answer tokens' logits after each answer's first token (> 0 ends "
                   "answers sooner); default: the server's (REGRAD_STOP_BIAS, default 0)")
    p.add_argument("--beams", type=int, metavar="B",
                   help="beam search's width (1: greedy; 2-8: the likeliest whole answer of B kept); default: the "
                   "server's (REGRAD_BEAMS, else the learner's own, else 1)")
    p.add_argument("--api-key", default=None, help="API key (default: REGRAD_API_KEY)")
    p.add_argument("--timeout-s", type=float, default=300.0, help="per-request timeout (default 300)")
    p.add_argument("--retries", type=int, default=8, help="retries on 503 / connection errors (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(p)
    p.set_defaults(func=run)


def _modes(given: list[str] | None) -> list[str]:
    if not given:
        return ["regrad"]
    if "all" in given:
        return list(_MODES)
    return list(dict.fromkeys(given))


def run(args: argparse.Namespace) -> int:
    from offline_tools.evaluation.evaluate import (
        evaluate_http,
        evaluate_in_process,
        format_mode_table,
        load_records,
        write_predictions,
    )
    from offline_tools.evaluation.kinds import format_kinds, kinds_of
    from offline_tools.evaluation.scoring import scores_path_for, write_scores, write_scores_png

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    modes = _modes(args.mode)
    for flag, path in (("--output", args.output), ("--scores", args.scores or scores_path_for(args.output))):
        if Path(path).is_dir():  # checked before the run, not after it: a folder here would lose its answers
            raise UsageError(f"{flag} {path} is a folder; give the path of a file to write")
    records = load_records(args.data, limit=args.limit)
    if not records:
        raise UsageError(f"no questions in {', '.join(args.data)}; check --data")
    common = dict(modes=modes, top_k=args.top_k, gamma=args.gamma, max_new_tokens=args.max_new_tokens,
                  composition=args.composition, stop_bias=args.stop_bias, beams=args.beams,
                  progress=not args.no_progress)
    if args.in_process:
        settings = build_settings(args, engine_only=True)
        result = evaluate_in_process(settings.engine_config(), records, batch_size=settings.max_batch, **common)
    else:
        api_key = args.api_key or os.environ.get("REGRAD_API_KEY") or None
        result = evaluate_http(args.url, records, concurrency=args.concurrency, api_key=api_key,
                               timeout_s=args.timeout_s, max_retries=args.retries, **common)
    count = write_predictions(args.output, result.predictions)
    kinds = kinds_of(result.predictions)
    scores = write_scores(args.scores or scores_path_for(args.output), result.tables, source=args.output,
                          errors=result.errors, kinds=kinds)
    picture = write_scores_png(scores, result.tables)
    print(format_mode_table(result.tables))
    if by_kind := format_kinds(kinds):
        print(f"\n{by_kind}")
    print(f"{count} predictions -> {args.output}, scores -> {scores}, {picture.name} "
          f"({len(records)} questions x {len(modes)} "
          f"modes, {result.elapsed_s:.1f} s)", file=sys.stderr)
    if result.errors:
        print(f"regrad: warning: {result.errors} requests failed and were scored 0; see `error` in "
              f"{args.output}", file=sys.stderr)
    return 0
