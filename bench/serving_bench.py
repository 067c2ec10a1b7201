"""Serving throughput and latency: continuous batching vs static micro-batching vs in-place.

The same questions (mode `regrad`, k = 3, the shipped trained learner, answers of varying length,
one store) answered four ways:
  * continuous: `POST /answer` over HTTP (uvicorn on 127.0.0.1), `REGRAD_SCHEDULER=continuous`: a
                request joins the running generation at the next decode step and leaves it the
                step it finishes, each row with its own adapter;
  * static:     the same server with `REGRAD_SCHEDULER=static`: requests that arrive together form
                a batch that lasts as long as its longest answer;
  * in-place:   the reference's way, one request at a time: retrieve, sum the stored gradients,
                patch the LoRA weights in place, generate, restore;
  * unadapted:  the continuous server in mode `closed_book` (same blind prompt, no gradients), at 8
                clients, in `--pairs` rounds alternated with `regrad` passes (ABBA), each round's ratio
                taken within it: `adapted_vs_unadapted_at_8` is their median.

Load: closed-loop clients (each sends its next request when its answer arrives) at 1, 8, 16 and
32 clients, and open-loop Poisson arrivals at `--rate` requests/s (arrivals do not wait for
answers, as behind a load balancer). Each way runs in a fresh interpreter.
Last line: one JSON object with `continuous_vs_static_at_8`, `continuous_vs_static_at_16`,
`continuous_speedup_vs_inplace_at_8` and `p95_ms_at_8` for both schedulers, and
`continuous_token_gap_at_8`: the gaps between a decoding row's tokens at 8 clients, from the server's
`regrad_token_gap_seconds` (the bucket that holds their median and 95th percentile).

    .venv/bin/python bench/serving_bench.py                      # the shipped learner
    .venv/bin/python bench/serving_bench.py --checkpoint DIR --rate 6
    .venv/bin/python bench/serving_bench.py --beams 4          # both servers beam-search every request
    .venv/bin/python bench/serving_bench.py --png serving.png     # also: throughput and p95 vs clients
    .venv/bin/python bench/serving_bench.py --plot record.json --png serving.png   # redraw a saved last line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_QUESTIONS = 32
CONCURRENCY = [1, 8, 16, 32]
TOP_K = 3
MAX_NEW_TOKENS = 20             # the service's default: answers stop where the model stops them
MAX_BATCH = 16                  # rows decoding together (both schedulers)
REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "regrad-smollm2-135m"
DATA = Path(os.environ.get("REGRAD_DATA_DIR", REPO.parent / "shared" / "data"))
# ---------------------------------------------------------------------------------------------


def build_artifacts(root: Path, checkpoint: str, n_questions: int) -> list[str]:
    """Index the questions' HotpotQA contexts, copy the learner, encode the passages they retrieve."""
    from gradient_store import GradientStore
    from models import Learner, format_passage, passage_gradients
    from retrieval import RetrieverConfig, open_retriever
    from retrieval.corpus import read_corpus

    lines = (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[:n_questions]
    questions = [json.loads(line)["question_text"] for line in lines]
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    retriever = open_retriever(RetrieverConfig(backend="tantivy", index=str(root / "index")))
    retriever.add(read_corpus(root / "corpus.jsonl"))
    hits = retriever.search_many(questions, TOP_K)
    retriever.close()

    learner = Learner.load(checkpoint)
    learner.save(root / "checkpoint")
    passages = {p.id: format_passage(p.title, p.text) for row in hits for p in row}
    ids = list(passages)
    store = GradientStore.create(root / "store", layout=learner.layout.to_json(), fingerprint=learner.fingerprint)
    store.append(ids, passage_gradients(learner, [passages[i] for i in ids]))
    store.close()
    print(f"built: {len(questions)} questions, {len(ids)} passages encoded, learner {learner.fingerprint[:12]}")
    return questions


def start_server(root: Path, dtype: str, scheduler: str, max_wait_ms: float, prefill_budget_tokens: int = 0,
                 composition: str | None = None, beams: int | None = None):
    import socket

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(_env_file=None, checkpoint=root / "checkpoint", store=root / "store",
                        index=str(root / "index"), device="cpu", dtype=dtype, scheduler=scheduler,
                        max_batch=MAX_BATCH, max_wait_ms=max_wait_ms, max_queue=1024,
                        prefill_budget_tokens=prefill_budget_tokens if scheduler == "continuous" else 0,
                        composition=composition, **({"beams": beams} if beams is not None else {}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("uvicorn did not start")
        time.sleep(0.1)
    return server, thread, f"http://127.0.0.1:{port}"


def _summary(latencies: list[float], elapsed_s: float, batch_sizes: list[int]) -> dict:
    cuts = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    return {"rps": len(latencies) / elapsed_s, "p50_ms": statistics.median(latencies) * 1000,
            "p95_ms": cuts[18] * 1000, "batch": statistics.mean(batch_sizes)}


UNEVEN_LENGTHS = (4, 32, 8, 24, 4, 16, 32, 8)   # --uneven: the i-th request's max_new_tokens, cycled
_lengths: tuple[int, ...] = (MAX_NEW_TOKENS,)


async def _post(http, url: str, question: str, mode: str, i: int = 0) -> tuple[float, dict]:
    started = time.perf_counter()
    r = await http.post(f"{url}/answer", json={"question": question, "mode": mode, "top_k": TOP_K,
                                               "max_new_tokens": _lengths[i % len(_lengths)]})
    r.raise_for_status()
    return time.perf_counter() - started, r.json()


async def closed_loop(url: str, questions: list[str], clients: int, n_requests: int, mode: str):
    """`clients` clients, each sending its next request as soon as its answer arrives."""
    import httpx

    queue = list(range(n_requests))
    latencies: list[float] = []
    batch_sizes: list[int] = []
    answers: dict[int, str] = {}

    async def client(http) -> None:
        while queue:
            i = queue.pop(0)
            latency, body = await _post(http, url, questions[i % len(questions)], mode, i)
            latencies.append(latency)
            batch_sizes.append(body["batch_size"])
            answers[i % len(questions)] = body["answer"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return _summary(latencies, elapsed, batch_sizes), answers


async def open_loop(url: str, questions: list[str], rate: float, n_requests: int, seed: int = 0) -> dict:
    """Poisson arrivals at `rate` requests/s, whatever the server's pace."""
    import httpx

    rng = random.Random(seed)
    latencies: list[float] = []
    batch_sizes: list[int] = []

    async def one(http, i: int) -> None:
        latency, body = await _post(http, url, questions[i % len(questions)], "regrad", i)
        latencies.append(latency)
        batch_sizes.append(body["batch_size"])

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=1024)) as http:
        started = time.perf_counter()
        tasks = []
        for i in range(n_requests):
            tasks.append(asyncio.create_task(one(http, i)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return _summary(latencies, elapsed, batch_sizes)


def service_phase(root: Path, questions: list[str], args: argparse.Namespace) -> dict:
    joins = args.scheduler == "continuous" and args.join_wait_ms is not None
    wait_ms = args.join_wait_ms if joins else args.max_wait_ms
    server, thread, url = start_server(root, args.dtype, args.scheduler, wait_ms, args.prefill_budget_tokens,
                                       args.composition, args.beams)
    results: dict = {"closed": {}}
    name = f"{args.scheduler:<10}"
    try:
        asyncio.run(closed_loop(url, questions, 4, 8, "regrad"))  # warm-up
        for c in args.levels:
            n = max(args.requests, 2 * c)
            gaps_before = token_gap_buckets(url) if c == 8 else None   # None: not read, or no histogram
            summary, answers = asyncio.run(closed_loop(url, questions, c, n, "regrad"))
            results["closed"][str(c)] = summary
            if gaps_before is not None:
                results["token_gap_at_8"] = token_gap_quantiles(gaps_before, token_gap_buckets(url))
            if c == 1:
                results["answers_alone"] = [answers.get(i) for i in range(len(questions))]
            if c == 8:
                results["answers_at_8"] = [answers.get(i) for i in range(len(questions))]
            print(f"{name} regrad      clients {c:>2}: {summary['rps']:6.2f} req/s   p50 {summary['p50_ms']:6.0f} ms"
                  f"   p95 {summary['p95_ms']:6.0f} ms   batch {summary['batch']:4.1f}", flush=True)
            if c == 8 and results.get("token_gap_at_8"):
                gap = results["token_gap_at_8"]
                print(f"{name} gaps between a row's tokens at 8: {gap['gaps']}, median <= {gap['p50_le_ms']} ms, "
                      f"95th percentile <= {gap['p95_le_ms']} ms (None: above the last bucket)", flush=True)
        results.update(paired_rounds(url, questions, args.requests, args.pairs if args.scheduler == "continuous" else 1,
                                     name))
        summary = asyncio.run(open_loop(url, questions, args.rate, args.requests))
        results["open"] = summary
        print(f"{name} open loop {args.rate:4.1f}/s: {summary['rps']:6.2f} req/s   p50 {summary['p50_ms']:6.0f} ms"
              f"   p95 {summary['p95_ms']:6.0f} ms   batch {summary['batch']:4.1f}", flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    return results


def paired_order(pairs: int) -> list[str]:
    """The passes of `pairs` adapted/unadapted rounds, ABBA: each round's second pass runs where the next
    round's first does, so a load that drifts during the bench weighs on both modes alike."""
    order: list[str] = []
    for r in range(pairs):
        order += ["regrad", "closed_book"] if r % 2 == 0 else ["closed_book", "regrad"]
    return order


def paired_summary(passes: list[tuple[str, dict]]) -> dict:
    """Per round, `regrad`'s rate over `closed_book`'s (the rounds in the order run, two passes each);
    `adapted_vs_unadapted_at_8`: their median; `unadapted_8`: the `closed_book` pass of median rate."""
    rounds = []
    for first, second in zip(passes[::2], passes[1::2], strict=True):
        pair = dict([first, second])
        adapted, unadapted = pair["regrad"]["rps"], pair["closed_book"]["rps"]
        rounds.append({"regrad_rps": round(adapted, 3), "closed_book_rps": round(unadapted, 3),
                       "ratio": round(adapted / unadapted, 3)})
    unadapted = sorted((summary for mode, summary in passes if mode == "closed_book"), key=lambda x: x["rps"])
    return {"paired_at_8": rounds, "adapted_vs_unadapted_at_8": statistics.median(r["ratio"] for r in rounds),
            "unadapted_8": unadapted[(len(unadapted) - 1) // 2]}


def paired_rounds(url: str, questions: list[str], n_requests: int, pairs: int, name: str) -> dict:
    """Adapted against unadapted at 8 clients on one warm server, in `pairs` rounds (`paired_order`): a
    shared 2-core VM's rate drifts by 10-20 % between passes minutes apart (docs/benchmarks.md), so the
    ratio is taken within each round and the rounds' median is reported."""
    asyncio.run(closed_loop(url, questions, 8, 16, "closed_book"))   # warm-up: the unadapted rows' shapes
    passes = []
    for mode in paired_order(pairs):
        summary, _ = asyncio.run(closed_loop(url, questions, 8, n_requests, mode))
        passes.append((mode, summary))
        print(f"{name} {mode:<11} clients  8: {summary['rps']:6.2f} req/s   p50 {summary['p50_ms']:6.0f} ms"
              f"   p95 {summary['p95_ms']:6.0f} ms   (paired round {(len(passes) + 1) // 2})", flush=True)
    return paired_summary(passes)


def token_gap_buckets(url: str) -> dict[float, float] | None:
    """The server's `regrad_token_gap_seconds` histogram (cumulative count per upper bound, seconds), or
    None where the server has none (the static scheduler, older code)."""
    import httpx

    buckets = {}
    for line in httpx.get(url + "/metrics", timeout=60).text.splitlines():
        if line.startswith('regrad_token_gap_seconds_bucket{le="'):
            bound, count = line.split('le="', 1)[1].split('"}')
            buckets[float(bound)] = float(count)
    return buckets or None


def token_gap_quantiles(before: dict[float, float], after: dict[float, float] | None) -> dict:
    """Between two scrapes: how many gaps between a decoding row's tokens, and the histogram bucket
    (its upper bound, ms) that holds the median and the 95th percentile."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after or {})}
    total = counts.get(float("inf"), 0.0)
    result: dict = {"gaps": int(total)}
    for name, q in (("p50_le_ms", 0.5), ("p95_le_ms", 0.95)):
        bound = next((b for b, c in counts.items() if total and c >= q * total), None)
        result[name] = None if bound is None or bound == float("inf") else round(bound * 1000)
    return result


def in_place_phase(root: Path, questions: list[str], dtype: str, composition: str | None = None) -> dict:
    """The reference's serving loop: one request at a time, weights patched in place and restored. The
    passages are weighed as the service weighs them where that needs no model (`sum`, `softmax`), so
    that both apply the same update; under `likelihood` it sums them plainly, as the reference does."""
    import torch

    from gradient_store import GradientStore
    from models import AnswerRequest, Learner, generate_answers
    from models.adapt import row_deltas
    from models.base import resolve_dtype
    from models.generate import normalize_answer_type
    from retrieval import RetrieverConfig, open_retriever

    learner = Learner.load(root / "checkpoint", dtype=resolve_dtype(dtype, "cpu"))  # the service's dtype
    retriever = open_retriever(RetrieverConfig(backend="tantivy", index=str(root / "index")))
    store = GradientStore.open(root / "store", expect_fingerprint=learner.fingerprint)
    alpha = learner.step_size_vector().detach()
    weigh = in_place_composition(composition or learner.composition)
    answers, latencies, lengths = [], [], []
    started = time.perf_counter()
    for question in questions:
        t0 = time.perf_counter()
        hits = retriever.search(question, TOP_K)
        vector, _, _ = store.sum([p.id for p in hits], weights=weigh.weights([p.score for p in hits]))
        delta = row_deltas(vector[None], alpha, torch.tensor([1.0]))[0]
        with learner.patched_in_place(delta):
            [raw] = generate_answers(learner, [AnswerRequest(question)], MAX_NEW_TOKENS, return_raw=True)
        latencies.append(time.perf_counter() - t0)
        answers.append(normalize_answer_type(raw, "short"))
        lengths.append(len(learner.tokenizer(raw, add_special_tokens=False)["input_ids"]))
    summary = _summary(latencies, time.perf_counter() - started, [1])
    retriever.close()
    store.close()
    print(f"in-place   one at a time:          {summary['rps']:6.2f} req/s   p50 {summary['p50_ms']:6.0f} ms"
          f"   p95 {summary['p95_ms']:6.0f} ms", flush=True)
    print(f"answer lengths (tokens): min {min(lengths)}, median {statistics.median(lengths)}, max {max(lengths)}")
    return {**summary, "answers": answers, "lengths": lengths, "composition": str(weigh)}


def in_place_composition(spec: str | None):
    """The service's composition (`spec`, else the default) where the in-place loop can apply it without a
    model; `sum` for `likelihood`, which would score every passage with the base model."""
    from engine.composition import DEFAULT_COMPOSITION, Composition

    composition = Composition.parse(spec) if spec else DEFAULT_COMPOSITION
    return Composition("sum") if composition.needs_likelihood else composition


def run_phase(phase: str, root: Path, args: argparse.Namespace, scheduler: str = "continuous") -> dict:
    """Run one phase in a fresh interpreter and read its JSON result (a process that has already
    built the artifacts, a backward pass, ran later generations markedly slower on these CPUs)."""
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--dtype", args.dtype,
               "--questions", str(args.questions), "--requests", str(args.requests), "--rate", str(args.rate),
               "--scheduler", scheduler, "--checkpoint", args.checkpoint, "--concurrency", args.concurrency,
               "--max-wait-ms", str(args.max_wait_ms), "--prefill-budget-tokens", str(args.prefill_budget_tokens)]
    command += ["--join-wait-ms", str(args.join_wait_ms)] if args.join_wait_ms is not None else []
    command += ["--uneven"] if args.uneven else []
    command += ["--pairs", str(args.pairs)]
    command += ["--composition", args.composition] if args.composition else []
    command += ["--beams", str(args.beams)] if args.beams is not None else []
    subprocess.run(command, check=True)
    return json.loads((root / f"{phase}-{scheduler}.json").read_text())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    from models.base import cpu_has_amx, resolve_dtype
    from offline_tools.training.plots import plot_serving_bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="learner folder (default: the shipped one)")
    parser.add_argument("--questions", type=int, default=N_QUESTIONS)
    parser.add_argument("--requests", type=int, default=64, help="requests per closed-loop level and open loop")
    parser.add_argument("--rate", type=float, default=6.0, help="open-loop Poisson arrival rate, requests/s")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="closed-loop client counts, comma-separated (must include 1, 8 and 16)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="REGRAD_MAX_WAIT_MS of both servers")
    parser.add_argument("--join-wait-ms", type=float, metavar="MS",
                        help="REGRAD_MAX_WAIT_MS of the continuous server alone (how long newcomers wait to join "
                        "decoding rows together; default: --max-wait-ms)")
    parser.add_argument("--prefill-budget-tokens", type=int, default=512, metavar="N",
                        help="REGRAD_PREFILL_BUDGET_TOKENS of the continuous server (default 512, the server's; 0: "
                        "newcomers are prefilled in a forward of their own)")
    parser.add_argument("--composition", metavar="SPEC",
                        help="REGRAD_COMPOSITION of both servers (default: the learner's served default; the "
                        "figures in docs/benchmarks.md before the likelihood default used softmax:0.4; the in-place "
                        "way always sums)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="base weights for every way (auto: bfloat16 on an AMX or AVX512-BF16 CPU)")
    parser.add_argument("--beams", type=int, metavar="W",
                        help="REGRAD_BEAMS of both servers (default: the learner's own, else greedy); the in-place "
                        "way stays greedy")
    parser.add_argument("--pairs", type=int, default=3, metavar="N",
                        help="adapted/unadapted rounds at 8 clients on the continuous server (default 3; the ratio "
                             "is each round's, and their median is reported)")
    parser.add_argument("--uneven", action="store_true",
                        help=f"per-request max_new_tokens cycling {UNEVEN_LENGTHS} (use an untrained learner, "
                        "whose answers run to the cap): long, uneven answers")
    parser.add_argument("--png", type=Path, help="also write throughput and p95 latency against clients, one line "
                        "per scheduler, as a PNG here")
    parser.add_argument("--plot", type=Path, metavar="RECORD",
                        help="run nothing: redraw --png from a saved last line (JSON) of an earlier run")
    parser.add_argument("--phase", choices=["build", "service", "inplace"], help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", default="continuous", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if args.pairs < 1:
        parser.error("--pairs must be at least 1 (adapted/unadapted rounds at 8 clients)")
    if args.beams is not None:
        from engine.types import check_beams
        try:
            check_beams(args.beams, "--beams")
        except ValueError as error:
            parser.error(str(error))
    if not {1, 8, 16} <= set(args.levels):
        parser.error("--concurrency must include 1, 8 and 16 (the record compares answers alone and at 8, "
                     "and rates at 8 and 16)")
    global _lengths
    if args.uneven:
        _lengths = UNEVEN_LENGTHS

    if args.plot:
        if not args.png:
            parser.error("--plot needs --png (where to draw the record)")
        print(plot_serving_bench(json.loads(args.plot.read_text().strip().splitlines()[-1]), args.png))
        return

    if args.phase:  # a child process: one phase, its result written as JSON under --root
        if args.phase == "build":
            result: dict = {"questions": build_artifacts(args.root, args.checkpoint, args.questions)}
        else:
            questions = json.loads((args.root / "build-continuous.json").read_text())["questions"]
            if args.phase == "service":
                result = service_phase(args.root, questions, args)
            else:
                result = in_place_phase(args.root, questions, args.dtype, args.composition)
        (args.root / f"{args.phase}-{args.scheduler}.json").write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="regrad-serving-bench-") as tmp:
        root = Path(tmp)
        n = len(run_phase("build", root, args)["questions"])
        continuous = run_phase("service", root, args, "continuous")
        static = run_phase("service", root, args, "static")
        inplace = run_phase("inplace", root, args)

    def rps(result: dict, c: int) -> float:
        return result["closed"][str(c)]["rps"]

    same = {name: sum(a == b for a, b in zip(result["answers_alone"], inplace["answers"]))
            for name, result in (("continuous", continuous), ("static", static))}
    same_8 = {name: sum(a == b for a, b in zip(result["answers_at_8"], inplace["answers"]))
              for name, result in (("continuous", continuous), ("static", static))}
    dtype = resolve_dtype(args.dtype, "cpu") or "preset (float32)"
    threads = os.environ.get("REGRAD_TORCH_THREADS") or os.cpu_count()
    machine = f"{cpu_name()} ({'AMX' if cpu_has_amx() else 'no AMX'}), {threads} cpus"
    print(f"machine: {machine}; base weights {dtype}; max_batch {MAX_BATCH}; max_new_tokens {MAX_NEW_TOKENS}; "
          f"prefill_budget_tokens {args.prefill_budget_tokens}")
    print(f"same answers as in-place, alone: continuous {same['continuous']}/{n}, static {same['static']}/{n}; "
          f"at 8 clients: continuous {same_8['continuous']}/{n}, static {same_8['static']}/{n}")
    record = {
        **{f"continuous_rps_at_{c}": round(rps(continuous, c), 3) for c in args.levels},
        **{f"static_rps_at_{c}": round(rps(static, c), 3) for c in args.levels},
        **{f"continuous_p95_ms_at_{c}": round(continuous["closed"][str(c)]["p95_ms"], 1) for c in args.levels},
        **{f"static_p95_ms_at_{c}": round(static["closed"][str(c)]["p95_ms"], 1) for c in args.levels},
        "inplace_rps": round(inplace["rps"], 3),
        "unadapted_rps_at_8": round(continuous["unadapted_8"]["rps"], 3),
        "adapted_vs_unadapted_at_8": round(continuous["adapted_vs_unadapted_at_8"], 3),
        "paired_at_8": continuous["paired_at_8"],
        "open_loop_rate": args.rate,
        "continuous_open_loop": {k: round(v, 1) for k, v in continuous["open"].items()},
        "static_open_loop": {k: round(v, 1) for k, v in static["open"].items()},
        "continuous_vs_static_at_8": round(rps(continuous, 8) / rps(static, 8), 2),
        "continuous_vs_static_at_16": round(rps(continuous, 16) / rps(static, 16), 2),
        "continuous_speedup_vs_inplace_at_8": round(rps(continuous, 8) / inplace["rps"], 2),
        "static_speedup_vs_inplace_at_8": round(rps(static, 8) / inplace["rps"], 2),
        "p95_ms_at_8": {"continuous": round(continuous["closed"]["8"]["p95_ms"], 1),
                        "static": round(static["closed"]["8"]["p95_ms"], 1)},
        "continuous_token_gap_at_8": continuous.get("token_gap_at_8"),
        "answer_tokens": {"min": min(inplace["lengths"]), "median": statistics.median(inplace["lengths"]),
                          "max": max(inplace["lengths"])},
        "machine": machine, "base_dtype": dtype, "prefill_budget_tokens": args.prefill_budget_tokens,
        "composition": args.composition or "the learner's served default",
        "inplace_composition": inplace["composition"],
        "beams": args.beams if args.beams is not None else "the learner's served default",
        "max_wait_ms": args.max_wait_ms,
        "join_wait_ms": args.join_wait_ms if args.join_wait_ms is not None else args.max_wait_ms,
    }
    print(json.dumps(record))
    if args.png:
        plot_serving_bench(record, args.png)


if __name__ == "__main__":
    main()
