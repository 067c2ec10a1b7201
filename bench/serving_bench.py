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


def start_server(root: Path):
    import socket

    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(checkpoint=root / "checkpoint", store=root / "store", index=str(root / "index"),
                        device="cpu", max_batch=16, max_wait_ms=10)
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

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop(0)
            started = time.perf_counter()
            r = await http.post(f"{url}/answer", json={"question": questions[i % len(questions)], "mode": mode,
                                                       "top_k": TOP_K, "max_new_tokens": MAX_NEW_TOKENS})
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)
            answers[i % len(questions)] = r.json()["answer"]

    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return n_requests / elapsed, statistics.median(latencies) * 1000, answers


def in_place_baseline(root: Path, questions: list[str]) -> tuple[float, dict[int, str]]:
    """The reference's serving loop: one request at a time, weights patched in place and restored."""
    import torch

    from gradient_store import GradientStore
    from models import AnswerRequest, Learner, generate_answers
    from models.adapt import row_deltas
    from retrieval import RetrieverConfig, open_retriever

    learner = Learner.load(root / "checkpoint")
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


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="trained learner (default: untrained bundled preset)")
    parser.add_argument("--questions", type=int, default=N_QUESTIONS)
    parser.add_argument("--requests", type=int, default=REQUESTS_PER_LEVEL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="regrad-serving-bench-") as tmp:
        root = Path(tmp)
        questions, _ = build_artifacts(root, args.checkpoint, args.questions)
        server, thread, url = start_server(root)
        results: dict[str, dict] = {"regrad": {}}
        try:
            asyncio.run(http_level(url, questions, 4, 4, "regrad"))  # warm-up
            for c in CONCURRENCY:
                rps, p50, answers = asyncio.run(http_level(url, questions, c, args.requests, "regrad"))
                results["regrad"][c] = {"rps": rps, "p50_ms": p50}
                print(f"service  regrad      clients {c:>2}: {rps:6.2f} req/s   p50 {p50:7.0f} ms")
            rps, p50, _ = asyncio.run(http_level(url, questions, 8, args.requests, "closed_book"))
            results["unadapted_8"] = {"rps": rps, "p50_ms": p50}
            print(f"service  closed_book clients  8: {rps:6.2f} req/s   p50 {p50:7.0f} ms  (no adaptation)")
            _, _, service_answers = asyncio.run(http_level(url, questions, 8, len(questions), "regrad"))
        finally:
            server.should_exit = True
            thread.join(timeout=60)
        inplace_rps, inplace_answers = in_place_baseline(root, questions)
        print(f"in-place one at a time:          {inplace_rps:6.2f} req/s")
    same = sum(service_answers[i] == inplace_answers[i] for i in range(len(questions)))
    speedup = results["regrad"][8]["rps"] / inplace_rps
    fraction = results["regrad"][8]["rps"] / results["unadapted_8"]["rps"]
    print(f"same answers as in-place: {same}/{len(questions)}")
    print(f"speedup vs in-place at 8 clients: {speedup:.2f}x; fraction of unadapted at 8: {fraction:.2f} "
          f"(torch threads {torch.get_num_threads()}, max_new_tokens {MAX_NEW_TOKENS})")
    print(json.dumps({
        **{f"rps_at_{c}": round(v["rps"], 3) for c, v in results["regrad"].items()},
        **{f"p50_ms_at_{c}": round(v["p50_ms"], 1) for c, v in results["regrad"].items()},
        "inplace_rps": round(inplace_rps, 3), "unadapted_rps_at_8": round(results["unadapted_8"]["rps"], 3),
        "speedup_vs_inplace_at_8": round(speedup, 2), "fraction_of_unadapted_at_8": round(fraction, 3),
        "same_answers_as_inplace": f"{same}/{len(questions)}",
    }))


if __name__ == "__main__":
    main()
