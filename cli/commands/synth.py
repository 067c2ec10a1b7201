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
        "appear in test only. Closed-book accuracy is about 0 by construction. Deterministic by --seed. "
        "With --relations novel|composition: the gradient-composition benchmarks instead (see below).",
    )
    p.add_argument("--output", required=True, help="folder for corpus.jsonl, {train,dev,test}.jsonl, synth.json")
    p.add_argument("--train-people", type=int, help="invented people in train (default 2000)")
    p.add_argument("--dev-people", type=int, help="invented people in dev (default 40)")
    p.add_argument("--test-people", type=int,
                   help="invented people in test, stated and asked in held-out phrasings (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    p.add_argument("--id-prefix",
                   help="ids are PREFIX-00042-attribute (default synth; with --relations: the mode's name); a second "
                   "set with another prefix can be indexed beside the first")
    p.add_argument("--avoid", metavar="FOLDER", action="append", default=[],
                   help="another benchmark's folder: none of its people's names is used here (fresh "
                   "training people that never share a name with its dev or test people); repeat for several")
    p.add_argument("--varied", action="store_true",
                   help="training people stated and asked in many more phrasings, with four more kinds of fact; "
                   "their dev people use phrasings seen nowhere else (no test split: the benchmark's test is the "
                   "test). See offline_tools/benchmarks/synth_varied.py")
    p.add_argument("--more-phrasings", action="store_true",
                   help="with --varied: a second batch of training phrasings (other sentence shapes) besides the first")
    p.add_argument("--wide-dev", action="store_true",
                   help="with --varied: dev people in 10 unseen statements and 10 unseen questions per attribute "
                   "(not 2), a dev split to choose between learners with")
    relations = p.add_argument_group(
        "relations",
        "--relations MODE writes another benchmark (offline_tools/benchmarks/synth_relations.py): subjects "
        "with ONE fact each over 46 relations, 28 for train, 6 held out for dev, 12 held out for test, so a "
        "question's top-k holds the asked fact plus same-relation facts about other subjects. novel: 30/10/10"
        " subjects per relation (840/60/120 questions); composition: clusters of --cluster-size subjects of "
        "one relation stated in the same words, every other one sharing a surname or brand word, 6/2/4 "
        "clusters per relation (840/60/240 questions)")
    relations.add_argument("--relations", choices=("novel", "composition"),
                           help="write the novel-relation or the composition benchmark, not the six-attribute one")
    relations.add_argument("--train-per-relation", type=int, metavar="N",
                           help="subjects (novel) or clusters (composition) per train relation (default 30 / 6)")
    relations.add_argument("--dev-per-relation", type=int, metavar="N",
                           help="subjects or clusters per dev relation (default 10 / 2)")
    relations.add_argument("--test-per-relation", type=int, metavar="N",
                           help="subjects or clusters per test relation (default 10 / 4)")
    relations.add_argument("--cluster-size", type=int, default=5, metavar="N",
                           help="composition: subjects per cluster, k = 1..N can be reported (default 5, max 11)")
    relations.add_argument("--extra-train-relations", nargs="?", const=1, type=int, choices=(1, 2, 3, 4), metavar="SET",
                           help="training questions only (no dev or test split) over more relations whose values "
                           "have the shapes the 28 lack; SET 1 (the default): 7 relations, counts of 2-4 digits "
                           "asked 'how many', a 4-digit code, a colour; SET 2: 9 more, counts stated before their "
                           "noun, colours stated with a material, a name with initials, a 5-digit number; SET 3: 9 "
                           "more, names always with a middle initial, small counts, a date, a letter-and-digit "
                           "code, two-word colours and places; SET 4: 10 more, objects with their material, titles, "
                           "vessel names, 3-digit counts; the 46 relations' files do not change")
    relations.add_argument("--dev-relations", type=int, choices=(1, 2), default=1, metavar="SET",
                           help="the dev split's relations: 1, the six (default); 2, eight more never trained on, "
                           "of the kinds of value the test relations have and the six lack (boat and pet names, a "
                           "title, an object with its material, a year, three-digit counts, a language, an "
                           "animal); then a dev split only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = _relations_config(args) if args.relations else _synth_config(args)
    avoid: set[str] = set()
    for folder in args.avoid:
        if Path(args.output).resolve() == Path(folder).resolve():
            raise UsageError(f"--avoid {folder} is the --output folder; name another benchmark")
        avoid |= _names_in(Path(folder))
        if _prefix_of(Path(folder)) == config.id_prefix:
            raise UsageError(f"--id-prefix {config.id_prefix} is also the prefix of --avoid {folder}: the two "
                             "would overwrite each other's passages in a shared index; choose another prefix")
    if args.relations:
        from offline_tools.benchmarks.synth_relations import BenchmarkTooLarge, write_relations_benchmark

        try:
            manifest = write_relations_benchmark(args.output, config, avoid_names=avoid)
        except BenchmarkTooLarge as error:
            raise UsageError(str(error)) from error
    else:
        from offline_tools.benchmarks.synth import write_benchmark

        manifest = write_benchmark(args.output, config, avoid_names=avoid)
    print(json.dumps({"output": args.output, "passages": manifest["passages"], "questions": manifest["questions"]}))
    return 0


def _synth_config(args: argparse.Namespace):
    from offline_tools.benchmarks.synth import SynthConfig

    for flag in ("train_per_relation", "dev_per_relation", "test_per_relation", "extra_train_relations"):
        if getattr(args, flag) not in (None, False):
            raise UsageError(f"--{flag.replace('_', '-')} counts a --relations benchmark; add --relations "
                             "novel|composition, or use --train-people/--dev-people/--test-people")
    if args.dev_relations != 1:
        raise UsageError("--dev-relations picks a --relations benchmark's dev relations; add --relations "
                         "novel|composition")
    people = {"train_people": 2000, "dev_people": 40, "test_people": 60}
    people |= {name: getattr(args, name) for name in people if getattr(args, name) is not None}
    try:
        return SynthConfig(**people, seed=args.seed, id_prefix=args.id_prefix or "synth", varied=args.varied,
                           more_phrasings=args.more_phrasings, wide_dev=args.wide_dev)
    except ValueError as error:
        raise UsageError(str(error)) from error


def _relations_config(args: argparse.Namespace):
    from offline_tools.benchmarks.synth_relations import RelationsConfig

    for flag in ("train_people", "dev_people", "test_people", "varied", "more_phrasings", "wide_dev"):
        if getattr(args, flag) not in (None, False):
            raise UsageError(f"--{flag.replace('_', '-')} is for the six-attribute benchmark, not --relations "
                             f"{args.relations}; count its subjects with --train-per-relation and the like")
    if args.extra_train_relations:
        for flag in ("dev_per_relation", "test_per_relation"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')}: --extra-train-relations writes training questions "
                                 "only; leave it out")
    if args.dev_relations != 1:
        for flag in ("train_per_relation", "test_per_relation", "extra_train_relations"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')}: --dev-relations {args.dev_relations} writes a dev "
                                 "split only; leave it out")
    try:
        return RelationsConfig(mode=args.relations, train_per_relation=args.train_per_relation,
                               dev_per_relation=args.dev_per_relation, test_per_relation=args.test_per_relation,
                               cluster_size=args.cluster_size, seed=args.seed, id_prefix=args.id_prefix,
                               extra_train=args.extra_train_relations is not None,
                               extra_set=args.extra_train_relations or 1, dev_set=args.dev_relations)
    except ValueError as error:
        raise UsageError(str(error)) from error


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
