"""Search error or reading error: for each wrong `regrad` answer, does the adapted model prefer the gold?

For every answer of a predictions file (`regrad evaluate` / `bench/composition_sweep.py --predictions`)
that is not an exact match, the learner is adapted as that answer was (the passages and weights the line
records, one inner step) and scores two answers teacher-forced: the gold and its own. Where the gold is
the likelier (summed log-probability, end-of-answer token included), greedy decoding missed an answer the
adapted model prefers (a *search* miss: a wider search could find it); where its own is the likelier, the
update did not teach the value (a *reading* miss: only the learner or the data can fix it).

    python bench/miss_margins.py --checkpoint checkpoints/regrad-smollm2-135m \\
        --data aug/composition2_dev.jsonl --predictions pred/composition2_dev-k3-likelihood_0.2_3.jsonl

Prints one line a miss and the counts by relation; `--output` writes them as JSON. In-process, no store:
each miss's passage gradients are computed afresh (a few seconds each on a CPU).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="learner folder")
    parser.add_argument("--data", required=True, help="augmented file the predictions answered (its passages)")
    parser.add_argument("--predictions", required=True, help="predictions file (`regrad evaluate` lines)")
    parser.add_argument("--answer-end", default="<|im_start|>",
                        help="the token the learner ends answers with (default %(default)s, the shipped learner's)")
    parser.add_argument("--dtype", default="auto", help="base weights' dtype, as served (default %(default)s)")
    parser.add_argument("--output", help="write the misses and counts as JSON here")
    args = parser.parse_args(argv)

    import torch

    from models.adapt import row_deltas
    from models.base import resolve_dtype
    from models.gradients import format_passage, passage_gradients
    from models.learner import Learner
    from offline_tools.datasets.augmented import read_augmented
    from offline_tools.training.meta import answer_logits

    learner = Learner.load(args.checkpoint, dtype=resolve_dtype(args.dtype, "cpu"))
    learner.eval()
    records = {r.id: r for r in read_augmented(args.data)}
    misses = [json.loads(line) for line in Path(args.predictions).read_text().splitlines() if line.strip()]
    misses = [p for p in misses if p["mode"] == "regrad" and p["scores"]["em"] < 1.0]

    def summed_logprob(record, answer: str, delta) -> float:
        logits, targets, _, _ = answer_logits(learner, [replace(record, answers=[answer])], delta, True, 0,
                                              args.answer_end)
        return float(-torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))

    rows, counts = [], Counter()
    for p in misses:
        record = records[p["id"]]
        by_id = {q.id: q for q in record.passages}
        texts = [format_passage(by_id[q["id"]].title, by_id[q["id"]].text) for q in p["passages"]]
        weights = torch.tensor([q.get("weight", 1.0) for q in p["passages"]])
        summed = (weights[:, None] * passage_gradients(learner, texts)).sum(0, keepdim=True)   # as the store sums
        with torch.no_grad():
            delta = row_deltas(summed, learner.step_size_vector().detach().float().cpu(), torch.ones(1))
            gold = max(summed_logprob(record, g, delta) for g in p["gold"])
            own = summed_logprob(record, p["answer"], delta) if p["answer"].strip() else float("-inf")
        kind = "search" if gold > own else "reading"
        relation = p["id"].split("-", 2)[-1]
        counts[(relation, kind)] += 1
        rows.append({"id": p["id"], "answer": p["answer"], "gold": p["gold"], "kind": kind,
                     "logprob_gold": round(gold, 3), "logprob_own": round(own, 3)})
        print(f"{kind:7s} gold {gold:8.2f}  own {own:8.2f}  {p['answer'][:40]!r} | {p['gold'][0]!r}", flush=True)
    relations = sorted({r for r, _ in counts})
    table = {r: {"search": counts[(r, "search")], "reading": counts[(r, "reading")]} for r in relations}
    print(json.dumps({"misses": len(rows), "search": sum(v["search"] for v in table.values()),
                      "reading": sum(v["reading"] for v in table.values()), "by_relation": table}, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps({"misses": rows, "by_relation": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
