"""What serving a request costs in CPU time, in one process: a measure a busy machine disturbs little.

On a machine shared with other jobs, wall-clock throughput (`bench/serving_bench.py`) measures the
scheduler of the operating system as much as ours. This bench runs the same engine in-process (no
HTTP), with one torch thread, and divides the process's CPU time by the requests answered:
  * continuous: `engine.scheduler.ContinuousScheduler`, 8 closed-loop clients (threads), mode
                `regrad` (each row its own adapter) and mode `closed_book` (no adaptation);
                with `--prefill-budget-tokens N` also the same scheduler with newcomers prefilled
                inside the decode step;
  * in-place:   the reference's way, one request at a time (patch the LoRA, generate, restore).
On one core, requests per CPU-second is the throughput the way would have alone; the ratios are
the figures to read. Wall-clock figures are printed too, and mean little under contention.
Last line: one JSON object.

    .venv/bin/python bench/serving_cpu_bench.py --root DIR        # DIR: a build of serving_bench.py
    .venv/bin/python bench/serving_cpu_bench.py --uneven --checkpoint UNTRAINED --prefill-budget-tokens 512
    .venv/bin/python bench/serving_cpu_bench.py --root DIR --phases --skip-inplace   # where the time goes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---- knobs ----------------------------------------------------------------------------------
CLIENTS = 8
REQUESTS = 48                   # per way (after a warm-up of 8: `--warmup`)
TOP_K = 3
MAX_NEW_TOKENS = 20
MAX_ROWS = 16
JOIN_WAIT_MS = 10.0
UNEVEN_LENGTHS = (4, 32, 8, 24, 4, 16, 32, 8)   # --uneven: the i-th request's max_new_tokens, cycled
# ---------------------------------------------------------------------------------------------


class PhaseClock:
    """Model-thread CPU time per phase of a continuous server (`--phases`): each phase's function is
    wrapped while the clock is installed. Per request, what `regrad` pays beyond `closed_book`."""

    PHASES = {  # phase → (module, class or None, function)
        "store sum": ("engine.core", "Engine", "complete"),
        "prompts + fold": ("models.generate", None, "prepare_rows"),
        "join (prefill)": ("models.decoding", "BatchDecoder", "join"),
        "decode step": ("models.decoding", "BatchDecoder", "_decode_one"),
        "packed step": ("models.decoding", "BatchDecoder", "_decode_packed"),
        "rows leave": ("models.decoding", "BatchDecoder", "_keep"),
    }

    def __init__(self) -> None:
        import importlib

        self.seconds: dict[str, float] = dict.fromkeys(self.PHASES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(self.PHASES, 0)
        self._originals = []
        for phase, (module, owner, name) in self.PHASES.items():
            target = importlib.import_module(module)
            target = getattr(target, owner) if owner else target
            self._originals.append((target, name, getattr(target, name)))
            setattr(target, name, self._wrap(phase, getattr(target, name)))

    def uninstall(self) -> None:
        """Put the wrapped functions back."""
        for target, name, original in self._originals:
            setattr(target, name, original)

    def _wrap(self, phase: str, function):
        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.thread_time() - started
                self.calls[phase] += 1
        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)

    def per_request(self, n_requests: int) -> dict:
        return {phase: {"ms": round(self.seconds[phase] * 1000 / n_requests, 1), "calls": self.calls[phase]}
                for phase in self.PHASES if self.calls[phase]}


def closed_loop(scheduler, questions: list[str], mode: str, n_requests: int, lengths: tuple[int, ...],
                clock: PhaseClock | None = None) -> dict:
    """`CLIENTS` closed-loop clients (`bench_data.run_clients`)."""
    from bench_data import run_clients

    from engine import Question

    lock = threading.Lock()
    latencies: list[float] = []
    answers: list[str] = []
    if clock is not None:
        clock.reset()

    def ask(i: int) -> None:
        started = time.perf_counter()
        question = Question(questions[i % len(questions)], mode=mode, top_k=TOP_K,
                            max_new_tokens=lengths[i % len(lengths)])
        answer = scheduler.submit(question).result()
        with lock:
            latencies.append(time.perf_counter() - started)
            answers.append(answer.answer)

    started_cpu = time.process_time()
    wall = run_clients(n_requests, CLIENTS, ask)
    cpu = time.process_time() - started_cpu
    latencies.sort()
    tokenizer = scheduler.engine.learner.tokenizer          # counted after the clock stopped
    tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in answers]
    result = {"requests": n_requests, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
              "per_cpu_s": round(n_requests / cpu, 3), "per_wall_s": round(n_requests / wall, 3),
              "p95_wall_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000),
              "answer_tokens_mean": round(sum(tokens) / len(tokens), 2)}
    if clock is not None:
        result["phases"] = clock.per_request(n_requests)
    return result


def continuous(root: Path, questions: list[str], args, budget: int | None) -> dict:
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.scheduler import ContinuousScheduler

    cache = {"relevance_cache_mb": args.relevance_cache_mb} if args.relevance_cache_mb is not None else {}
    config = EngineConfig(checkpoint=root / "checkpoint", store=root / "store", index=str(root / "index"),
                          device="cpu", dtype=args.dtype, composition=args.composition, **cache)
    fused = {"prefill_budget_tokens": budget} if budget else {}   # (so that the bench runs on older code too)
    scheduler = ContinuousScheduler(max_rows=MAX_ROWS, join_wait_ms=JOIN_WAIT_MS, **fused)
    scheduler.start(lambda: Engine.from_config(config))
    lengths = UNEVEN_LENGTHS if args.uneven else (MAX_NEW_TOKENS,)
    clock = PhaseClock() if args.phases else None
    try:
        closed_loop(scheduler, questions, "regrad", args.warmup, lengths)        # warm-up
        relevance = getattr(scheduler.engine, "relevance_cache", None)          # (absent on older code)
        before = (relevance.hits, relevance.misses) if relevance is not None else (0, 0)
        result = {mode: closed_loop(scheduler, questions, mode, args.requests, lengths, clock)
                  for mode in ("regrad", "closed_book")}
        if relevance is not None:   # the likelihood scoring's prompt cache over the measured requests
            result["regrad"]["relevance_cache"] = {"hits": relevance.hits - before[0],
                                                   "misses": relevance.misses - before[1],
                                                   "max_mb": relevance.max_bytes // 2**20}
    finally:
        scheduler.stop()
        scheduler.engine.close()
        if clock is not None:
            clock.uninstall()
    return result


def in_place(root: Path, questions: list[str], args) -> dict:
    """The reference's serving loop: one request at a time, weights patched in place and restored; the
    passages weighed as the service weighs them where that needs no model (`in_place_composition`)."""
    import torch
    from serving_bench import in_place_composition

    from gradient_store import GradientStore
    from models import AnswerRequest, Learner, generate_answers
    from models.adapt import row_deltas
    from models.base import resolve_dtype
    from retrieval import RetrieverConfig, open_retriever

    learner = Learner.load(root / "checkpoint", dtype=resolve_dtype(args.dtype, "cpu"))
    retriever = open_retriever(RetrieverConfig(backend="tantivy", index=str(root / "index")))
    store = GradientStore.open(root / "store", expect_fingerprint=learner.fingerprint)
    alpha = learner.step_size_vector().detach()
    weigh = in_place_composition(args.composition or learner.composition)
    lengths = UNEVEN_LENGTHS if args.uneven else (MAX_NEW_TOKENS,)

    def answer(i: int) -> None:
        question = questions[i % len(questions)]
        hits = retriever.search(question, TOP_K)
        vector, _, _ = store.sum([p.id for p in hits], weights=weigh.weights([p.score for p in hits]))
        delta = row_deltas(vector[None], alpha, torch.tensor([1.0]))[0]
        with learner.patched_in_place(delta):
            generate_answers(learner, [AnswerRequest(question)], lengths[i % len(lengths)])

    answer(0)                                                                    # warm-up
    n = max(8, args.requests // 2)
    started, started_cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        answer(i)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    retriever.close()
    store.close()
    return {"requests": n, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "per_cpu_s": round(n / cpu, 3),
            "per_wall_s": round(n / wall, 3), "composition": str(weigh)}


def main() -> None:
    import torch
    from serving_bench import CHECKPOINT, build_artifacts, cpu_name

    from models.base import cpu_has_amx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="a serving_bench build (checkpoint, index, store); default: build")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="learner folder, when building")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--uneven", action="store_true", help=f"max_new_tokens cycling {UNEVEN_LENGTHS}")
    parser.add_argument("--composition", metavar="SPEC", help="the engine's default composition (default: the "
                        "learner's served default; figures before the likelihood default used softmax:0.4)")
    parser.add_argument("--warmup", type=int, default=CLIENTS, metavar="N",
                        help=f"regrad requests before the measured ones (default {CLIENTS}; 32 = every question "
                        "once: with a relevance cache that holds them, the likelihood scoring is then warm)")
    parser.add_argument("--relevance-cache-mb", type=int, metavar="MB",
                        help="the likelihood scoring's prompt KV cache (default: the engine's)")
    parser.add_argument("--prefill-budget-tokens", type=int, default=0, metavar="N",
                        help="also run continuous with newcomers prefilled inside the decode step (0: not)")
    parser.add_argument("--skip-inplace", action="store_true")
    parser.add_argument("--phases", action="store_true",
                        help="also time the model thread's phases per request (store sum, fold, prefill, steps)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("REGRAD_TORCH_THREADS", "1")))

    with tempfile.TemporaryDirectory(prefix="regrad-serving-cpu-") as tmp:
        root = args.root or Path(tmp)
        if args.root is None:
            build_artifacts(root, args.checkpoint, 32)
            (root / "build-continuous.json").write_text(json.dumps({"questions": _questions(root)}))
        questions = json.loads((root / "build-continuous.json").read_text())["questions"]
        record: dict = {"machine": f"{cpu_name()} ({'AMX' if cpu_has_amx() else 'no AMX'})",
                        "torch_threads": torch.get_num_threads(), "uneven": args.uneven, "clients": CLIENTS}
        record["continuous"] = continuous(root, questions, args, None)
        if args.prefill_budget_tokens:
            record["continuous_fused"] = continuous(root, questions, args, args.prefill_budget_tokens)
            record["prefill_budget_tokens"] = args.prefill_budget_tokens
        if not args.skip_inplace:
            record["inplace"] = in_place(root, questions, args)
    for way in ("continuous", "continuous_fused"):
        if way in record:
            for mode, figures in record[way].items():
                print(f"{way:>16} {mode:<11}: {figures['per_cpu_s']:6.2f} req/CPU-s  ({figures['per_wall_s']:5.2f} "
                      f"req/s wall, p95 {figures['p95_wall_ms']} ms), answers of {figures['answer_tokens_mean']} "
                      "tokens on average")
                if "relevance_cache" in figures:
                    print(f"{'':>30}relevance cache: {figures['relevance_cache']}")
                for phase, spent in figures.get("phases", {}).items():
                    print(f"{'':>30}{phase:<16} {spent['ms']:7.1f} ms/request ({spent['calls']} calls)")
    cont = record["continuous"]
    record["adapted_vs_unadapted_cpu"] = round(cont["regrad"]["per_cpu_s"] / cont["closed_book"]["per_cpu_s"], 3)
    if "inplace" in record:
        record["continuous_vs_inplace_cpu"] = round(cont["regrad"]["per_cpu_s"] / record["inplace"]["per_cpu_s"], 2)
        print(f"{'in-place':>16} regrad     : {record['inplace']['per_cpu_s']:6.2f} req/CPU-s")
    if "continuous_fused" in record:
        record["fused_vs_continuous_cpu"] = round(
            record["continuous_fused"]["regrad"]["per_cpu_s"] / cont["regrad"]["per_cpu_s"], 3)
    print(json.dumps(record))


def _questions(root: Path) -> list[str]:
    return [json.loads(line)["question_text"] for line in (root / "corpus.jsonl").read_text().splitlines()]


if __name__ == "__main__":
    main()
