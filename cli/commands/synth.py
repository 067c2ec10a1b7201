"""`regrad synth`: write the controlled knowledge-injection benchmark (invented people and their facts)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from offline_tools.errors import InputFileError, UsageError

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
    p.add_argument("--id-prefix", default="synth",
                   help="ids are PREFIX-00042-attribute (default synth); a second set with another prefix "
                   "can be indexed beside the first")
    p.add_argument("--avoid", metavar="FOLDER", action="append", default=[],
                   help="another benchmark's folder: none of its people's names is used here (fresh "
                   "training people that never share a name with its dev or test people); repeat for several")
    p.add_argument("--varied", action="store_true",
                   help="training people stated and asked in many more phrasings, with four more kinds of fact; "
                   "their dev people use phrasings seen nowhere else (no test split: the benchmark's test is the "
                   "test). See offline_tools/synth_varied.py")
    p.add_argument("--more-phrasings", action="store_true",
                   help="with --varied: a second batch of training phrasings (other sentence shapes) besides the first")
    p.add_argument("--wide-dev", action="store_true",
                   help="with --varied: dev people in 10 unseen statements and 10 unseen questions per attribute "
                   "(not 2), a dev split to choose between learners with")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from offline_tools.synth import SynthConfig, write_benchmark

    try:
        config = SynthConfig(train_people=args.train_people, dev_people=args.dev_people,
                             test_people=args.test_people, seed=args.seed, id_prefix=args.id_prefix,
                             varied=args.varied, more_phrasings=args.more_phrasings,
                             wide_dev=args.wide_dev)
    except ValueError as error:
        raise UsageError(str(error)) from error
    avoid: set[str] = set()
    for folder in args.avoid:
        if Path(args.output).resolve() == Path(folder).resolve():
            raise UsageError(f"--avoid {folder} is the --output folder; name another benchmark")
        avoid |= _names_in(Path(folder))
        if _prefix_of(Path(folder)) == args.id_prefix:
            raise UsageError(f"--id-prefix {args.id_prefix} is also the prefix of --avoid {folder}: the two "
                             "would overwrite each other's passages in a shared index; choose another prefix")
    manifest = write_benchmark(args.output, config, avoid_names=avoid)
    print(json.dumps({"output": args.output, "passages": manifest["passages"], "questions": manifest["questions"]}))
    return 0


def _names_in(folder: Path) -> set[str]:
    """The people's names (passage titles) of the benchmark in `folder`."""
    from retrieval import CorpusFormatError, read_corpus

    path = folder / "corpus.jsonl"
    if not path.is_file():
        raise InputFileError(str(path), "no such file; --avoid takes a folder written by `regrad synth`")
    try:
        return {passage.title for passage in read_corpus(path, format="jsonl")}
    except CorpusFormatError as error:
        raise InputFileError(error.path, "not a `regrad synth` corpus line (JSON with `title` and `text`)",
                             error.line) from error


def _prefix_of(folder: Path) -> str:
    """The id prefix of the benchmark in `folder` (files written before prefixes existed used "synth")."""
    try:
        return json.loads((folder / "synth.json").read_text())["config"].get("id_prefix", "synth")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "synth"
