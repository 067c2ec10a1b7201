"""`make demo`: the whole pipeline on real data, on the embedded defaults, on a CPU.

Steps (each one reuses what an earlier run built, so a second run is quick):
  1. prepare the bundled SmolLM2-135M-Instruct;
  2. index the HotpotQA (IRCoT) contexts + the 2Wiki corpus (distractors) with tantivy BM25;
  3. augment a train and a dev split of the HotpotQA questions (hash-of-id split, disjoint);
  4. meta-train the bundled preset briefly;
  5. encode the gradients the dev questions need into a gradient store;
  6. start the API, ask three questions over HTTP, evaluate the dev split in all four modes,
     print the table, stop the server.
`python -m offline_tools.demo --serve-only` serves the demo's artifacts until stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ---- knobs (the demo's whole configuration) ---------------------------------------------------
ARTIFACTS = Path(os.environ.get("REGRAD_DEMO_DIR", REPO / "artifacts" / "demo"))
DATA = Path(os.environ.get("REGRAD_DATA_DIR", REPO.parent / "shared" / "data"))
HOTPOT = DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
DISTRACTORS = DATA / "hipporag_2wikimultihopqa_corpus" / "2wikimultihopqa_corpus.json"
TOP_K = 3
TRAIN_STEPS = int(os.environ.get("REGRAD_DEMO_STEPS", 16))   # meta-batches of 4 questions
TRAIN_LR = 1e-3          # higher than the paper's 4e-4: the demo only has a few steps
TRAIN_EXAMPLES = 96
EVAL_EXAMPLES = 12        # validation questions used during training (from the dev split's tail)
DEV_QUESTIONS = 40        # dev questions evaluated in each of the four modes
N_EXAMPLE_QUESTIONS = 3   # asked over HTTP with their passages printed (first dev questions)
# -----------------------------------------------------------------------------------------------


def regrad(*args: str, quiet: bool = False) -> None:
    """Run a `regrad` CLI step as a user would; stop the demo if it fails."""
    command = [sys.executable, "-m", "offline_tools", *args]
    print(f"\n$ regrad {' '.join(args)}", flush=True)
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL if quiet else None)
    if result.returncode != 0:
        sys.exit(f"demo: step `regrad {args[0]}` failed with exit code {result.returncode}")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def build(paths: dict[str, Path]) -> None:
    step("1. bundled model")
    regrad("model", "prepare")

    step("2. embedded BM25 index: HotpotQA contexts + 2Wiki corpus as distractors")
    if (paths["index"] / ".demo-done").exists():
        print(f"reusing {paths['index']}")
    else:
        regrad("index", "--corpus", str(HOTPOT), "--corpus", str(DISTRACTORS), "--index", str(paths["index"]))
        (paths["index"] / ".demo-done").touch()

    step("3. augment train and dev splits (top-3 passages per question)")
    for split in ("train", "dev"):
        regrad("augment", "--dataset", "hotpotqa", "--data-path", str(HOTPOT), "--index", str(paths["index"]),
               "--split", split, "--top-k", str(TOP_K), "--output", str(paths[split]))
    dev = paths["dev"].read_text().splitlines()
    # Validation for checkpoint selection must not be the split we report on.
    paths["val"].write_text("\n".join(dev[-EVAL_EXAMPLES:]) + "\n")
    paths["dev_eval"].write_text("\n".join(dev[: min(DEV_QUESTIONS, len(dev) - EVAL_EXAMPLES)]) + "\n")

    step(f"4. meta-train the bundled preset ({TRAIN_STEPS} steps, CPU)")
    if (paths["checkpoint"] / "summary.json").exists():
        print(f"reusing {paths['checkpoint']}")
    else:
        regrad("train", "--train", str(paths["train"]), "--dev", str(paths["val"]),
               "--output", str(paths["checkpoint"]), "--max-steps", str(TRAIN_STEPS),
               "--max-train-examples", str(TRAIN_EXAMPLES), "--max-eval-examples", str(EVAL_EXAMPLES),
               "--eval-every", str(TRAIN_STEPS), "--meta-batch-size", "4", "--lr", str(TRAIN_LR), "--first-order")
    summary = json.loads((paths["checkpoint"] / "summary.json").read_text())
    print(f"validation loss: untrained {summary['initial']['loss']:.4f} -> best {summary['best']['loss']:.4f} "
          f"(step {summary['best']['step']}); {summary['steps']} steps in {summary['wall_s']:.0f} s")

    step("5. encode the gradients the dev questions need")
    regrad("encode", "--checkpoint", str(paths["checkpoint"] / "best"), "--store", str(paths["store"]),
           "--passages-from", str(paths["dev_eval"]), "--top-k", str(TOP_K))
    regrad("store", "info", str(paths["store"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(paths: dict[str, Path], port: int) -> list[str]:
    return [sys.executable, "-m", "offline_tools", "serve", "--checkpoint", str(paths["checkpoint"] / "best"),
            "--store", str(paths["store"]), "--index", str(paths["index"]), "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"demo: the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"demo: the server was not ready after {timeout_s:.0f} s")


def ask(url: str, dev_file: Path) -> None:
    import httpx

    records = [json.loads(line) for line in dev_file.read_text().splitlines()[:N_EXAMPLE_QUESTIONS]]
    for record in records:
        question = record["question"]
        response = httpx.post(f"{url}/answer", json={"question": question, "mode": "regrad", "top_k": TOP_K},
                              timeout=300)
        response.raise_for_status()
        body = response.json()
        print(f"\nQ: {question}")
        for p in body["passages"]:
            print(f"   [{p['gradient']:>8}] {p['score']:6.2f}  {p['title']}")
        timings = ", ".join(f"{k} {v:.0f} ms" for k, v in body["timings_ms"].items())
        print(f"A: {body['answer']!r}   gold: {record['answers'][0]!r}   ({timings})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-only", action="store_true", help="serve the demo's artifacts until stopped")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    paths = {
        "index": ARTIFACTS / "index", "checkpoint": ARTIFACTS / "checkpoint", "store": ARTIFACTS / "store",
        "train": ARTIFACTS / "data_aug" / "hotpotqa" / "train.jsonl",
        "dev": ARTIFACTS / "data_aug" / "hotpotqa" / "dev.jsonl",
        "val": ARTIFACTS / "data_aug" / "hotpotqa" / "val.jsonl",
        "dev_eval": ARTIFACTS / "data_aug" / "hotpotqa" / "dev_eval.jsonl",
        "predictions": ARTIFACTS / "predictions.jsonl",
    }
    if args.serve_only:
        if not (paths["checkpoint"] / "best" / "learner.json").exists():
            sys.exit("demo: nothing to serve yet; run `make demo` first")
        print(f"serving the demo on http://127.0.0.1:{args.port} (docs at /docs); Ctrl-C stops")
        return subprocess.call(serve_command(paths, args.port), cwd=REPO)

    started = time.perf_counter()
    if not HOTPOT.is_file():
        sys.exit(f"demo: {HOTPOT} not found; set REGRAD_DATA_DIR to the shared data folder")
    build(paths)

    step("6. the API: three questions over HTTP, then the dev split in all four modes")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(serve_command(paths, port), cwd=REPO, start_new_session=True)
    try:
        wait_ready(url, server)
        ask(url, paths["dev_eval"])
        regrad("evaluate", "--url", url, "--data", str(paths["dev_eval"]), "--mode", "all",
               "--top-k", str(TOP_K), "--output", str(paths["predictions"]))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; artifacts in {ARTIFACTS}")
    print("`make serve` serves them on http://127.0.0.1:8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
