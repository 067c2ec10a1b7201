"""How long newcomers' model work stalls the rows already decoding: done whole at the join vs done ahead,
a budget at a time between decode steps, in-process.

Three kinds of newcomer bring model work before they can decode (`--workload`):
  * likelihood: a request weighed by `likelihood` reads each of its passages' scoring prompts with
    the base model (about 150 tokens a passage, three a request: `models/relevance.py`);
  * given:      a request with its own passages (`passages`: here its top 3 from the build's index,
    handed in, and no store) computes their gradients, a forward and a backward each (`softmax:0.4`,
    no scoring);
  * miss:       a retrieved request whose passages the store lacks (the build's index served with no
    store, as while a corpus is still being encoded) computes their gradients the same way.
Done whole at the join, that work freezes every decoding row's stream for as long, and several
newcomers joining together freeze it for all of theirs. With `work_ahead` (the default) the
continuous scheduler does it into the engine's caches at most `prefill_budget_tokens` tokens' work
between two decode steps, and a newcomer joins once its work is done. Here 8 closed-loop clients ask
a serving_bench build's questions, each once after a warm-up (the caches emptied, so that all the
work is cold, as on a corpus larger than the cache), with the serving benches' uneven caps (best
with an untrained learner, whose answers run to their caps):
  * at join:  `work_ahead=False` (the way before), `--prefill-budget-tokens` of the first budget;
  * ahead:    `work_ahead=True`, for each budget of `--budgets`.
Per way: the gaps between two tokens of a decoding row (the scheduler's `on_token_gap`, what
`regrad_token_gap_seconds` observes: p50, p95, p99, longest), requests/s and p50/p95 latency. Ways
alternate over `--repeat` rounds; each figure is the median over rounds. Last line: JSON.

    .venv/bin/python bench/serving_bench.py --phase build --root R --checkpoint UNTRAINED --questions 96
    .venv/bin/python bench/work_ahead_bench.py --root R                          # budgets 512, 256
    .venv/bin/python bench/work_ahead_bench.py --root R --workload given --limit 48 --budgets 512
    .venv/bin/python bench/work_ahead_bench.py --root R --workload miss --limit 48 --budgets 512
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---- knobs ----------------------------------------------------------------------------------
MAX_ROWS = 16
JOIN_WAIT_MS = 10.0
WARMUP = 8                      # requests before each measure (then the engine's caches are emptied)
TOP_K = 3
# ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def run_way(config, questions: list[str], given: dict[str, tuple] | None, budget: int, ahead: bool) -> dict:
    """One scheduler (its engine built on the model thread), a warm-up, emptied caches, then every
    question once (with its own passages when `given`)."""
    from step_breakdown import closed_loop, summary

    from engine.core import Engine
    from engine.scheduler import ContinuousScheduler

    def ask(question):
        if given is not None:
            question = dataclasses.replace(question, passages=given[question.question])
        return scheduler.submit(question).result()

    def empty_caches() -> None:
        scheduler.engine.relevance_cache.clear()
        scheduler.engine.gradient_cache.clear()

    gaps: list[float] = []
    scheduler = ContinuousScheduler(max_rows=MAX_ROWS, join_wait_ms=JOIN_WAIT_MS, prefill_budget_tokens=budget,
                                    on_token_gap=gaps.append, work_ahead=ahead)
    scheduler.start(lambda: Engine.from_config(config))
    try:
        closed_loop(ask, questions[-WARMUP:], WARMUP)
        scheduler.run_exclusive(empty_caches).result()
        gaps.clear()
        wall, latencies = closed_loop(ask, questions, len(questions))
    finally:
        scheduler.stop()
        if scheduler.engine is not None:
            scheduler.engine.close()
    return summary(wall, latencies, len(questions)) | {
        "gaps": len(gaps), **{f"gap_{name}_ms": round(percentile(gaps, q) * 1000)
                              for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}}


def own_passages(root: Path, questions: list[str]) -> dict[str, tuple]:
    """Each question's top `TOP_K` paragraphs from the build's index, as the caller's own passages."""
    from engine.types import GivenPassage
    from retrieval.tantivy_backend import TantivyRetriever

    retriever = TantivyRetriever(root / "index")
    try:
        hits = retriever.search_many(questions, TOP_K)
    finally:
        retriever.close()
    return {question: tuple(GivenPassage(p.text, p.title) for p in passages)
            for question, passages in zip(questions, hits, strict=True)}


def main() -> None:
    import torch
    from serving_bench import cpu_name

    from engine.config import EngineConfig
    from models.base import cpu_has_amx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="a serving_bench build (checkpoint, index, store)")
    parser.add_argument("--budgets", default="512,256", help="prefill_budget_tokens of the ways ahead")
    parser.add_argument("--workload", choices=["likelihood", "given", "miss"], default="likelihood",
                        help="likelihood: scoring at likelihood:0.2; given: the caller's own passages, miss: "
                        "retrieved passages the store lacks, both at softmax:0.4")
    parser.add_argument("--limit", type=int, help="the first N questions of the build")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; each way once a round")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("REGRAD_TORCH_THREADS", os.cpu_count() or 1)))
    questions = json.loads((args.root / "build-continuous.json").read_text())["questions"][:args.limit]
    given = own_passages(args.root, questions) if args.workload == "given" else None
    composition = "likelihood:0.2" if args.workload == "likelihood" else "softmax:0.4"
    store = args.root / "store" if args.workload == "likelihood" else None   # given, miss: their gradients in no store
    config = EngineConfig(checkpoint=args.root / "checkpoint", store=store,
                          index=str(args.root / "index"), device="cpu", dtype="auto", composition=composition)
    budgets = [int(b) for b in args.budgets.split(",")]
    ways = {"at join": (budgets[0], False)} | {f"ahead, {b}": (b, True) for b in budgets}
    rounds: dict[str, list[dict]] = {way: [] for way in ways}
    for _ in range(args.repeat):
        for way, (budget, ahead) in ways.items():
            rounds[way].append(run_way(config, questions, given, budget, ahead))
            figures = rounds[way][-1]
            print(f"{way:>14}: gaps p50 {figures['gap_p50_ms']} / p95 {figures['gap_p95_ms']} / p99 "
                  f"{figures['gap_p99_ms']} / max {figures['gap_max_ms']} ms ({figures['gaps']}); "
                  f"{figures['rps']:.2f} req/s, p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms", flush=True)
    record: dict = {"machine": f"{cpu_name()} ({'AMX' if cpu_has_amx() else 'no AMX'})",
                    "torch_threads": torch.get_num_threads(), "requests": len(questions),
                    "workload": args.workload, "composition": composition, "repeat": args.repeat}
    keys = ("gap_p50_ms", "gap_p95_ms", "gap_p99_ms", "gap_max_ms", "rps", "p50_ms", "p95_ms")
    for way, runs in rounds.items():
        record[way] = {key: statistics.median(run[key] for run in runs) for key in keys}
    base = record["at join"]
    for way in ways:
        if way != "at join":
            record[way]["gap_p95_vs_at_join"] = round(base["gap_p95_ms"] / max(record[way]["gap_p95_ms"], 1), 2)
            record[way]["rps_vs_at_join"] = round(record[way]["rps"] / base["rps"], 2)
            print(f"{way:>14}: token-gap p95 {record[way]['gap_p95_vs_at_join']}x shorter than at join, "
                  f"throughput {record[way]['rps_vs_at_join']}x")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
