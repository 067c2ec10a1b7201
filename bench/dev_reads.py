"""A learner's reads on the four synthetic dev splits of relations training never saw, built on first use.

The first dev set's six relations take a value and a noun; the second set's eight (`--dev-relations 2`)
take the test relations' kinds of value. A lever can help one and hurt the other (docs/results.md, rule
25), so a selection rule reads all four splits and takes their mean:

    novel-relation dev        regrad synth --relations novel --dev-per-relation 20          (120 questions)
    composition dev           regrad synth --relations composition --dev-per-relation 4     (120, clusters of 5)
    novel-relation dev, set 2 regrad synth --relations novel --dev-relations 2 --dev-per-relation 15
    composition dev, set 2    regrad synth --relations composition --dev-relations 2 --dev-per-relation 3

Each benchmark is indexed over its own corpus and its dev questions augmented with their top 5 (the
files docs/results.md's rules read, byte for byte for the first set). Then the learner answers each split
in-process at k = 3 (`--k` adds more), with one gradient store per learner under the work folder, so a
second read of the same learner computes nothing. The table has EM per split and the mean of the four.
Every cell's answers go to `--predictions`; `regrad score A --against B` pairs two learners' cells.

    python bench/dev_reads.py --checkpoint checkpoints/regrad-smollm2-135m --output reads.json \\
        --predictions reads/shipped
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# name -> `regrad synth` flags (each benchmark's own id prefix: the name)
SPLITS: dict[str, list[str]] = {
    "novel": ["--relations", "novel", "--dev-per-relation", "20"],
    "composition": ["--relations", "composition", "--dev-per-relation", "4"],
    "novel2": ["--relations", "novel", "--dev-relations", "2", "--dev-per-relation", "15"],
    "composition2": ["--relations", "composition", "--dev-relations", "2", "--dev-per-relation", "3"],
}


def build(work: Path, name: str) -> tuple[Path, Path]:
    """The split's index and augmented dev file under `work`, made with the CLI where missing."""
    from cli.main import main as regrad

    folder, index, questions = work / name, work / f"index-{name}", work / "aug" / f"{name}_dev.jsonl"
    steps = [
        (folder / "synth.json", ["synth", *SPLITS[name], "--id-prefix", name, "--output", str(folder)]),
        (index / ".built", ["index", "--corpus", str(folder / "corpus.jsonl"), "--index", str(index),
                            "--no-progress"]),
        (questions, ["augment", "--dataset", "synth", "--data-path", str(folder), "--split", "dev", "--index",
                     str(index), "--top-k", "5", "--output", str(questions), "--no-progress"]),
    ]
    for done, argv in steps:
        if not done.exists():
            if regrad(argv) != 0:
                raise SystemExit(f"regrad {' '.join(argv)} failed")
            if done.name == ".built":
                done.touch()
    return index, questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="learner folder")
    parser.add_argument("--work", default="artifacts/dev-reads", help="benchmarks, indexes and stores (reused)")
    parser.add_argument("--composition", default="served", help="spec, or `served` (the learner's own)")
    parser.add_argument("--stop-bias", type=float, help="bias on ending an answer (default: the engine's, 0)")
    parser.add_argument("--beams", type=int, help="beam width (default: the engine's, 1 = greedy)")
    parser.add_argument("--k", type=int, action="append", help="more top-k besides 3 (repeatable; the mean is k = 3's)")
    parser.add_argument("--split", action="append", choices=list(SPLITS), help="only these splits (repeatable)")
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--predictions", metavar="DIR",
                        help="write each cell's answers here, named as bench/composition_sweep.py names them")
    args = parser.parse_args(argv)

    from composition_sweep import read_cells  # bench/ is on the path when this runs as a script

    from engine import EngineConfig
    from engine.core import Engine
    from models import Learner

    fingerprint = Learner.read_meta(args.checkpoint)["fingerprint"]
    rows = []
    for name in args.split or list(SPLITS):
        index, questions = build(Path(args.work), name)
        engine = Engine.from_config(EngineConfig(
            checkpoint=Path(args.checkpoint), index=str(index), write_back=True,
            store=Path(args.work) / "stores" / f"{fingerprint[:12]}-{name}"))   # a learner's own, per split
        try:
            rows += [{**row, "split": name, "learner": fingerprint} for row in read_cells(
                engine, questions, ks=[3, *(k for k in args.k or [] if k != 3)], compositions=[args.composition],
                stop_biases=None if args.stop_bias is None else [args.stop_bias], modes=["regrad"],
                beams=None if args.beams is None else [args.beams],
                predictions=args.predictions)]
        finally:
            engine.close()
    at3 = [r["em"] for r in rows if r["k"] == 3]
    if len(at3) == len(SPLITS):
        print(f"mean EM of the four splits at k = 3: {sum(at3) / len(at3):.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
