"""Where a long answer's latency goes: continuous batching's decode steps vs static batching's waves.

In-process (no HTTP), 8 closed-loop clients asking with the uneven caps of the serving benches, on a
serving_bench build (`--root`, best with an untrained learner so that answers run to their caps):
  * continuous: `ContinuousScheduler` (newcomers packed into the decode step, `--prefill-budget-tokens`);
                every `BatchDecoder.step` timed, grouped by the rows decoding and by whether newcomers'
                prompt tokens were packed into it, and every join (store sum, fold) timed;
  * static:     waves of 8, each `Engine.answer_batch` (what a static server does when 8 clients
                submit together): every request of a wave waits as long as the wave.
Per way: requests/s, p50/p95 latency, mean latency by cap; the mean step by rows. These are the terms
of docs/benchmarks.md's "Why the uneven p95 stays at static's on a CPU". Last line: one JSON object.

    .venv/bin/python bench/serving_bench.py --phase build --root R --checkpoint UNTRAINED --questions 32
    .venv/bin/python bench/step_breakdown.py --root R
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---- knobs ----------------------------------------------------------------------------------
CLIENTS = 8
MAX_ROWS = 16
JOIN_WAIT_MS = 10.0
TOP_K = 3
UNEVEN_LENGTHS = (4, 32, 8, 24, 4, 16, 32, 8)   # the i-th request's max_new_tokens, cycled (serving benches')
# ---------------------------------------------------------------------------------------------


def closed_loop(submit, questions: list[str], n: int) -> tuple[float, dict[int, list[float]]]:
    """`CLIENTS` closed-loop clients (`bench_data.run_clients`): (wall s, latencies by cap)."""
    from bench_data import run_clients

    from engine import Question

    lock, latencies = threading.Lock(), defaultdict(list)

    def ask(i: int) -> None:
        cap = UNEVEN_LENGTHS[i % len(UNEVEN_LENGTHS)]
        started = time.perf_counter()
        submit(Question(questions[i % len(questions)], mode="regrad", top_k=TOP_K, max_new_tokens=cap))
        with lock:
            latencies[cap].append(time.perf_counter() - started)

    return run_clients(n, CLIENTS, ask), latencies


def summary(wall: float, latencies: dict[int, list[float]], n: int) -> dict:
    every = sorted(x for values in latencies.values() for x in values)
    return {"rps": round(n / wall, 2), "p50_ms": round(every[len(every) // 2] * 1000),
            "p95_ms": round(every[int(0.95 * (len(every) - 1))] * 1000),
            "mean_ms_by_cap": {cap: round(statistics.mean(v) * 1000) for cap, v in sorted(latencies.items())}}


class StepClock:
    """Times every `BatchDecoder.step` (rows decoding, prompt tokens waiting) and scheduler join."""

    def __init__(self) -> None:
        from engine.scheduler import ContinuousScheduler
        from models.decoding import BatchDecoder

        self.steps: list[tuple[int, bool, float]] = []
        self.joins: list[float] = []
        self._restore = [(BatchDecoder, "step", BatchDecoder.step), (ContinuousScheduler, "_join",
                                                                     ContinuousScheduler._join)]
        step, join, clock = BatchDecoder.step, ContinuousScheduler._join, self

        def timed_step(decoder):
            rows, packed = len(decoder._rows), bool(decoder._pending)
            started = time.perf_counter()
            try:
                return step(decoder)
            finally:
                clock.steps.append((rows, packed, time.perf_counter() - started))

        def timed_join(scheduler, decoder, jobs):
            started = time.perf_counter()
            try:
                return join(scheduler, decoder, jobs)
            finally:
                clock.joins.append(time.perf_counter() - started)

        BatchDecoder.step, ContinuousScheduler._join = timed_step, timed_join

    def uninstall(self) -> None:
        for owner, name, original in self._restore:
            setattr(owner, name, original)

    def by_rows(self) -> dict[str, float]:
        groups = defaultdict(list)
        for rows, packed, seconds in self.steps:
            if rows:
                groups[f"{rows}{'+packed' if packed else ''}"].append(seconds)
        ordered = sorted(groups.items(), key=lambda kv: (int(kv[0].split("+")[0]), kv[0]))
        return {key: round(statistics.mean(v) * 1000, 1) for key, v in ordered}


def main() -> None:
    import torch
    from serving_bench import cpu_name

    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.scheduler import ContinuousScheduler
    from models.base import cpu_has_amx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="a serving_bench build (checkpoint, index, store)")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--prefill-budget-tokens", type=int, default=512, metavar="N")
    parser.add_argument("--composition", default="softmax:0.4", metavar="SPEC")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("REGRAD_TORCH_THREADS", os.cpu_count() or 1)))
    questions = json.loads((args.root / "build-continuous.json").read_text())["questions"]
    config = EngineConfig(checkpoint=args.root / "checkpoint", store=args.root / "store",
                          index=str(args.root / "index"), device="cpu", dtype="auto", composition=args.composition)
    record: dict = {"machine": f"{cpu_name()} ({'AMX' if cpu_has_amx() else 'no AMX'})",
                    "torch_threads": torch.get_num_threads(), "requests": args.requests,
                    "prefill_budget_tokens": args.prefill_budget_tokens}

    scheduler = ContinuousScheduler(max_rows=MAX_ROWS, join_wait_ms=JOIN_WAIT_MS,
                                    prefill_budget_tokens=args.prefill_budget_tokens or None)
    scheduler.start(lambda: Engine.from_config(config))
    clock = StepClock()
    try:
        closed_loop(lambda q: scheduler.submit(q).result(), questions, CLIENTS)          # warm-up
        clock.steps.clear()
        clock.joins.clear()
        wall, latencies = closed_loop(lambda q: scheduler.submit(q).result(), questions, args.requests)
        record["continuous"] = summary(wall, latencies, args.requests) | {
            "steps": len(clock.steps), "step_ms_by_rows": clock.by_rows(),
            "joins": len(clock.joins), "join_ms_mean": round(statistics.mean(clock.joins) * 1000, 1)}
        engine = scheduler.engine
    finally:
        scheduler.stop()

    from engine import Question

    clock.steps.clear()
    waves = defaultdict(list)
    started = time.perf_counter()
    for wave in range(args.requests // CLIENTS):
        batch = [Question(questions[i % len(questions)], mode="regrad", top_k=TOP_K,
                          max_new_tokens=UNEVEN_LENGTHS[i % len(UNEVEN_LENGTHS)])
                 for i in range(wave * CLIENTS, (wave + 1) * CLIENTS)]
        wave_started = time.perf_counter()
        engine.answer_batch(batch)
        for question in batch:
            waves[question.max_new_tokens].append(time.perf_counter() - wave_started)
    wall = time.perf_counter() - started
    record["static_waves"] = summary(wall, waves, args.requests // CLIENTS * CLIENTS) | {
        "steps": len(clock.steps), "step_ms_by_rows": clock.by_rows()}
    clock.uninstall()
    engine.close()
    for way in ("continuous", "static_waves"):
        figures = record[way]
        print(f"{way:>12}: {figures['rps']:.2f} req/s, p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms; "
              f"mean ms by cap {figures['mean_ms_by_cap']}")
        print(f"{'':>14}{figures['steps']} steps, mean ms by rows decoding: {figures['step_ms_by_rows']}")
    print(f"{'':>14}continuous joins: {record['continuous']['joins']}, "
          f"{record['continuous']['join_ms_mean']} ms each (store sum, fold)")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
