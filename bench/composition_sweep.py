"""How the combination of passage gradients changes the answers: a grid of compositions x top-k (x stop
biases, `--stop-bias`, x beam widths, `--beams`), in-process.

One engine (learner, index, store) answers every augmented file under each composition and top-k;
the table has one row per (file, k, mode, composition) with EM and F1, and where the file has yes/no
questions, its rows score them apart from the short answers too (`kinds`, as `regrad evaluate`'s
table by kind: HotpotQA's held-out yes/no golds are mostly "no", so a learner's yes/no habit moves its
overall F1 without any change in reading). Gradients missing from the
store are computed once and written back, so later cells read them. This is the measurement behind
the served default composition (chosen on dev files only: docs/results.md, "Composition").

    python bench/composition_sweep.py --checkpoint checkpoints/regrad-smollm2-135m --index artifacts/rel/index \\
        --store artifacts/rel/store --data artifacts/rel/aug/novel_dev.jsonl --k 1 --k 3 \\
        --composition sum --composition softmax:0.05 --composition softmax:0.1 --output sweep.json \\
        --predictions sweep/   # each cell's answers: compare two with `regrad score A --against B`
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="learner folder")
    parser.add_argument("--index", required=True, help="tantivy index folder")
    parser.add_argument("--store", required=True, help="gradient store folder (created if missing)")
    parser.add_argument("--data", action="append", required=True, help="augmented file (repeatable)")
    parser.add_argument("--k", type=int, action="append", help="top-k (repeatable; default 3)")
    parser.add_argument("--composition", action="append",
                        help="sum, softmax[:T[:M]], likelihood[:T[:M]] (M: the weights' total at every k), or "
                        "`served` (the engine's default: the learner's own, else the served default) (repeatable; "
                        "default served)")
    parser.add_argument("--stop-bias", type=float, action="append", metavar="B",
                        help="bias on ending an answer after its first token (repeatable; default: the served one)")
    parser.add_argument("--beams", type=int, action="append", metavar="W",
                        help="beam width (repeatable; 1 = greedy; default: the served one)")
    parser.add_argument("--mode", action="append", help="mode (repeatable; default regrad)")
    parser.add_argument("--limit", type=int, help="first N questions of each file")
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--predictions", metavar="DIR",
                        help="write each cell's predictions here too, as DIR/<data>-k<K>-<composition>.jsonl "
                        "(`regrad evaluate`'s lines), so two cells or two learners can be compared question by "
                        "question with `regrad score A --against B`")
    args = parser.parse_args(argv)

    from engine import EngineConfig
    from engine.core import Engine

    engine = Engine.from_config(EngineConfig(checkpoint=Path(args.checkpoint), index=args.index,
                                             store=Path(args.store), write_back=True))
    try:
        rows = [row for path in args.data
                for row in read_cells(engine, path, ks=args.k or [3], compositions=args.composition or ["served"],
                                      stop_biases=args.stop_bias, modes=args.mode or ["regrad"], limit=args.limit,
                                      beams=args.beams,
                                      predictions=args.predictions)]
    finally:
        engine.close()
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def read_cells(engine, path: str | Path, *, ks: list[int], compositions: list[str], stop_biases: list[float] | None,
               modes: list[str], limit: int | None = None, predictions: str | Path | None = None,
               beams: list[int] | None = None) -> list[dict]:
    """One augmented file answered by `engine` in every (k, composition, stop bias, beams) cell: a row per cell and
    mode (EM, F1, and by kind where the file has yes/no questions), printed as it comes; each cell's answers
    written to `predictions` when given (`bench/dev_reads.py` reads its splits through this too)."""
    from offline_tools.evaluation.evaluate import evaluate_in_process, load_records, write_predictions
    from offline_tools.evaluation.kinds import format_kinds, kinds_of, kinds_to_dict

    records = load_records([str(path)], limit=limit)
    rows = []
    for k in ks:
        for spec, bias, width in [(c, b, w) for c in compositions for b in stop_biases or [None]
                                  for w in beams or [None]]:
            started = time.perf_counter()
            result = evaluate_in_process(engine, records, modes=modes, top_k=k,
                                         composition=None if spec == "served" else spec, stop_bias=bias,
                                         beams=width, progress=False)
            spec = str(engine.composition) if spec == "served" else spec
            bias = engine.stop_bias if bias is None else bias
            width = engine.beams if width is None else width
            if predictions:
                cell = f"{Path(path).stem}-k{k}-{spec.replace(':', '_')}"
                cell += f"-sb{bias:g}" if stop_biases else ""
                cell += f"-b{width}.jsonl" if beams else ".jsonl"
                write_predictions(Path(predictions) / cell, result.predictions)
            kinds = kinds_of(result.predictions)
            by_kind = format_kinds(kinds)   # "" unless the file has yes/no questions
            for mode, table in result.tables.items():
                s = table.overall_micro
                row = {"data": Path(path).name, "k": k, "mode": mode, "composition": spec,
                       "stop_bias": bias, "beams": width, "n": s.n, "em": round(s.em, 2), "f1": round(s.f1, 2)}
                print(f"{Path(path).name:<28} k={k}  {mode:<16} {spec:<14} sb={bias:<4g} b={width} n={s.n:<4} "
                      f"EM {s.em:6.2f}  F1 {s.f1:6.2f}  ({time.perf_counter() - started:.0f} s)", flush=True)
                if by_kind:
                    row["kinds"] = kinds_to_dict(kinds)[mode]   # dataset -> kind -> scores
                rows.append(row)
            if by_kind:
                print(by_kind, flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
