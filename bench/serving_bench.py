"""Serving throughput: micro-batched per-request adaptation vs the reference's in-place way.

Three ways to answer the same questions (mode `regrad`, k = 3, same learner, same store):
  * service:   `POST /answer` over HTTP (uvicorn on 127.0.0.1) at 1, 4, 8 and 16 concurrent
               clients; requests that arrive together run as one batched generation where
               each row carries its own adapter (shared weights never change);
  * in-place:  the reference's way, one request at a time: retrieve, sum the stored gradients,
               patch the LoRA weights in place, generate, restore;
  * unadapted: the same service at 8 clients in mode `closed_book` (same blind prompt, no
               gradients): the batched generation with no adaptation at all, the upper bound.
Last line: one JSON object with `speedup_vs_inplace_at_8` and `fraction_of_unadapted_at_8`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_QUESTIONS = 16
CONCURRENCY = [1, 4, 8, 16]
REQUESTS_PER_LEVEL = 32         # each level answers this many requests (questions cycle)
TOP_K = 3
MAX_NEW_TOKENS = 12
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
# ---------------------------------------------------------------------------------------------


def build_artifacts(root: Path, checkpoint: str | None, n_questions: int) -> tuple[list[str], Path]:
    """Index the questions' HotpotQA contexts, save the learner, encode the passages they retrieve."""
    from gradient_store import GradientStore
    from models import Learner, format_passage, load_preset, passage_gradients
    from retrieval import RetrieverConfig, open_retriever
    from retrieval.corpus import read_corpus

    lines = (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[:n_questions]
    questions = [json.loads(line)["question_text"] for line in lines]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    retriever = open_retriever(RetrieverConfig(backend="tantivy", index=str(root / "index")))
    retriever.add(read_corpus(root / "corpus.jsonl"))
    hits = retriever.search_many(questions, TOP_K)
    retriever.close()

    learner = Learner.load(checkpoint) if checkpoint else Learner.create(load_preset("smollm2-135m-instruct"))
    learner.save(root / "checkpoint")
    passages = {p.id: format_passage(p.title, p.text) for row in hits for p in row}
    ids = list(passages)
    store = GradientStore.create(root / "store", layout=learner.layout.to_json(), fingerprint=learner.fingerprint)
    store.append(ids, passage_gradients(learner, [passages[i] for i in ids]))
    store.close()
    print(f"built: {len(questions)} questions, {len(ids)} passages encoded")
    return questions, root / "checkpoint"


def start_server(root: Path, dtype: str):
    import socket

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(checkpoint=root / "checkpoint", store=root / "store", index=str(root / "index"),
                        device="cpu", dtype=dtype, max_batch=16, max_wait_ms=10)
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


async def http_level(url: str, questions: list[str], concurrency: int, n_requests: int, mode: str):
    import httpx

    queue = list(range(n_requests))
    answers: dict[int, str] = {}
    latencies: list[float] = []
    batch_sizes: list[int] = []

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop(0)
            started = time.perf_counter()
            r = await http.post(f"{url}/answer", json={"question": questions[i % len(questions)], "mode": mode,
                                                       "top_k": TOP_K, "max_new_tokens": MAX_NEW_TOKENS})
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            answers[i % len(questions)] = r.json()["answer"]
            batch_sizes.append(r.json()["batch_size"])

    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return n_requests / elapsed, statistics.median(latencies) * 1000, statistics.mean(batch_sizes), answers


def in_place_baseline(root: Path, questions: list[str], dtype: str) -> tuple[float, dict[int, str]]:
    """The reference's serving loop: one request at a time, weights patched in place and restored."""
    import torch

    from gradient_store import GradientStore
    from models import AnswerRequest, Learner, generate_answers
    from models.adapt import row_deltas
    from models.base import resolve_dtype
    from retrieval import RetrieverConfig, open_retriever

    learner = Learner.load(root / "checkpoint", dtype=resolve_dtype(dtype, "cpu"))  # the service's dtype
    retriever = open_retriever(RetrieverConfig(backend="tantivy", index=str(root / "index")))
    store = GradientStore.open(root / "store", expect_fingerprint=learner.fingerprint)
    alpha = learner.step_size_vector().detach()
    answers = {}
    started = time.perf_counter()
    for i, question in enumerate(questions):
        ids = [p.id for p in retriever.search(question, TOP_K)]
        vector, _, _ = store.sum(ids)
        delta = row_deltas(vector[None], alpha, torch.tensor([1.0]))[0]
        with learner.patched_in_place(delta):
            answers[i] = generate_answers(learner, [AnswerRequest(question)], max_new_tokens=MAX_NEW_TOKENS)[0]
    throughput = len(questions) / (time.perf_counter() - started)
    retriever.close()
    store.close()
    return throughput, answers


def service_phase(root: Path, questions: list[str], n_requests: int, dtype: str) -> dict:
    server, thread, url = start_server(root, dtype)
    results: dict = {"regrad": {}}
    try:
        asyncio.run(http_level(url, questions, 4, 4, "regrad"))  # warm-up
        for c in CONCURRENCY:
            rps, p50, batch, answers = asyncio.run(http_level(url, questions, c, n_requests, "regrad"))
            results["regrad"][str(c)] = {"rps": rps, "p50_ms": p50}
            if c == 1 and len(answers) == len(questions):
                results["answers_alone"] = [answers[i] for i in range(len(questions))]
            print(f"service  regrad      clients {c:>2}: {rps:6.2f} req/s   p50 {p50:7.0f} ms  batch {batch:4.1f}")
        rps, p50, batch, _ = asyncio.run(http_level(url, questions, 8, n_requests, "closed_book"))
        results["unadapted_8"] = {"rps": rps, "p50_ms": p50}
        print(f"service  closed_book clients  8: {rps:6.2f} req/s   p50 {p50:7.0f} ms  batch {batch:4.1f}"
              "  (no adaptation)")
        _, _, _, answers = asyncio.run(http_level(url, questions, 8, len(questions), "regrad"))
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    results["answers"] = [answers[i] for i in range(len(questions))]
    return results


def run_phase(phase: str, root: Path, args: argparse.Namespace) -> dict:
    """Run one phase in a fresh interpreter and read its JSON result.

    Each way is measured in a process of its own: on this CPU a process that has already built the
    artifacts (a learner, a backward pass) ran the next generations markedly slower.
    """
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--dtype", args.dtype,
               "--questions", str(args.questions), "--requests", str(args.requests)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    subprocess.run(command, check=True)
    return json.loads((root / f"{phase}.json").read_text())


def main() -> None:
    from models.base import resolve_dtype

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="trained learner (default: untrained bundled preset)")
    parser.add_argument("--questions", type=int, default=N_QUESTIONS)
    parser.add_argument("--requests", type=int, default=REQUESTS_PER_LEVEL)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="base weights for both ways (auto: bfloat16 on an AMX CPU, else the preset's)")
    parser.add_argument("--phase", choices=["build", "service", "inplace"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # a child process: one phase, its result written as JSON under --root
        if args.phase == "build":
            questions, _ = build_artifacts(args.root, args.checkpoint, args.questions)
            result: dict = {"questions": questions}
        else:
            questions = json.loads((args.root / "build.json").read_text())["questions"]
            if args.phase == "service":
                result = service_phase(args.root, questions, args.requests, args.dtype)
            else:
                rps, answers = in_place_baseline(args.root, questions, args.dtype)
                print(f"in-place one at a time:          {rps:6.2f} req/s")
                result = {"rps": rps, "answers": [answers[i] for i in range(len(questions))]}
        (args.root / f"{args.phase}.json").write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="regrad-serving-bench-") as tmp:
        root = Path(tmp)
        n = len(run_phase("build", root, args)["questions"])
        service = run_phase("service", root, args)
        inplace = run_phase("inplace", root, args)
    same = sum(a == b for a, b in zip(service["answers"], inplace["answers"]))
    same_alone = sum(a == b for a, b in zip(service.get("answers_alone", []), inplace["answers"]))
    rps_8, unadapted_8 = service["regrad"]["8"]["rps"], service["unadapted_8"]["rps"]
    speedup, fraction = rps_8 / inplace["rps"], rps_8 / unadapted_8
    dtype = resolve_dtype(args.dtype, "cpu") or "preset (float32)"
    threads = os.environ.get("REGRAD_TORCH_THREADS") or os.cpu_count()
    print(f"same answers as in-place: {same}/{n} in batches of 8, {same_alone}/{n} alone (1 client)")
    print(f"speedup vs in-place at 8 clients: {speedup:.2f}x; fraction of unadapted at 8: {fraction:.2f} "
          f"(cpus {threads}, max_new_tokens {MAX_NEW_TOKENS}, base weights {dtype})")
    print(json.dumps({
        **{f"rps_at_{c}": round(v["rps"], 3) for c, v in service["regrad"].items()},
        **{f"p50_ms_at_{c}": round(v["p50_ms"], 1) for c, v in service["regrad"].items()},
        "inplace_rps": round(inplace["rps"], 3), "unadapted_rps_at_8": round(unadapted_8, 3),
        "speedup_vs_inplace_at_8": round(speedup, 2), "fraction_of_unadapted_at_8": round(fraction, 3),
        "same_answers_as_inplace": f"{same}/{n}", "same_answers_as_inplace_alone": f"{same_alone}/{n}",
        "base_dtype": dtype,
    }))


if __name__ == "__main__":
    main()
