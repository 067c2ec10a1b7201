"""`make demo`: the whole pipeline on real data and the controlled benchmark, with the shipped learner.

Steps (each one reuses what an earlier run built, so a second run is quick):
  1. prepare the bundled SmolLM2-135M-Instruct;
  2. write the synthetic benchmark (`regrad synth`: invented people, held-out phrasings for test)
     and index it with the HotpotQA (IRCoT) contexts and the 2Wiki corpus (tantivy BM25);
  3. augment the synthetic test questions and a HotpotQA dev split (top-3 passages each);
  4. the learner: the meta-trained one shipped in `checkpoints/` (its fingerprint is checked), or,
     with REGRAD_DEMO_TRAIN=1 (`make train`), meta-train it from scratch with the exact recipe: two
     runs, their average, run 3 warm-started from that average on varied people, the average of
     run 3 and its start, run 5 warm-started from that on a second batch of phrasings, and the
     average of run 5 and its start (about 6.5 hours on a 2-core CPU; run 4 was not shipped);
  5. encode the gradients the reported questions need into a gradient store;
  6. start the API, ask three questions over HTTP, evaluate in all five modes (the shift control
     included), print the table, stop the server.
`python -m cli.demo --serve-only` serves the demo's artifacts until stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
SHIPPED = REPO / "checkpoints" / "regrad-smollm2-135m"   # the meta-trained learner `make demo` serves
TRAIN = os.environ.get("REGRAD_DEMO_TRAIN", "") == "1"   # meta-train from scratch instead
TOP_K = 3
SYNTH_SEED = 0
# The shipped learner's recipe (`make train` reproduces it; see its COMMAND.md). It is the average
# (`regrad export` with two --checkpoint: a model soup) of two runs of one preset, meta-trained
# independently from the same initialisation; each run alone scores about 76 % on synthetic dev.
TRAIN_PRESET = "smollm2-135m-instruct-l8-r16"   # LoRA r 16 on the MLPs of layers 8-29
TRAIN_FLAGS = ("--bf16", "on")  # the shipped runs'; see its COMMAND.md
VAL_SYNTH, VAL_HOTPOT = 48, 24  # both runs' checkpoint selection: synth dev head + HotpotQA dev tail
# Run 1: every synthetic training question and every HotpotQA training question HOTPOT_REPEATS
# times, shuffled (seed 0); TRAIN_STEPS, then resumed to EXTEND_TO.
HOTPOT_REPEATS = 3   # the 289 real questions would be 6 % of the mix once; 15 % three times
TRAIN_STEPS = int(os.environ.get("REGRAD_DEMO_STEPS", 1000))   # meta-batches of 4 questions
EXTEND_TO = int(os.environ.get("REGRAD_DEMO_EXTEND_TO", 1500))  # then `--resume` to this many steps (0: no)
EVAL_EVERY = 250
# Run 2: one schedule on a bigger mix: the same synthetic questions, those of 2,000 fresh people
# (another seed and id prefix, no name shared with the benchmark) and HotpotQA FRESH_HOTPOT_REPEATS
# times, shuffled (seed 0).
FRESH_SEED, FRESH_PREFIX = 1, "s1"
FRESH_HOTPOT_REPEATS = 4
FRESH_STEPS = int(os.environ.get("REGRAD_DEMO_FRESH_STEPS", 1700))
FRESH_EVAL_EVERY = 425
# Run 3: the average of runs 1 and 2, warm-started (`--init-from`, fresh optimizer) on a mix of 1,600
# *varied* people (`regrad synth --varied`: 8-10 more phrasings per attribute and four more kinds of
# fact; their 60 dev people use phrasings seen nowhere else), the benchmark's training questions and
# HotpotQA, at half the learning rates. Its checkpoint selection validates on the varied dev people.
# The shipped learner is the average of run 3 and the average it started from.
VARIED_SEED, VARIED_PREFIX, VARIED_PEOPLE, VARIED_DEV_PEOPLE = 2, "s2", 1600, 60
VARIED_REPEATS, VARIED_HOTPOT_REPEATS = 2, 4
VARIED_STEPS = int(os.environ.get("REGRAD_DEMO_VARIED_STEPS", 1500))
VARIED_EVAL_EVERY = 375
VARIED_FLAGS = ("--lr", "2e-4", "--step-size-lr", "5e-3")
# Run 5 (run 4 was not shipped: docs/results.md): the average of run 3 and its start, warm-started on
# 2,400 more varied people in both batches of training phrasings (`--more-phrasings`), run 3's varied
# people, the benchmark's training questions and HotpotQA x4 (one of each, shuffled with seed 5), at
# run 3's learning rates and data-order seed 1, validated as run 3 was. The shipped learner is the
# average of run 5 and the average it started from.
MORE_SEED, MORE_PREFIX, MORE_PEOPLE = 3, "s3", 2400
MORE_HOTPOT_REPEATS, MORE_SHUFFLE_SEED = 4, 5
MORE_STEPS = int(os.environ.get("REGRAD_DEMO_MORE_STEPS", 1000))
MORE_EVAL_EVERY = 250
MORE_FLAGS = (*VARIED_FLAGS, "--seed", "1")
# What the demo reports (the full splits are in docs/results.md).
SYNTH_QUESTIONS = 60      # synthetic test questions: unseen people, unseen phrasings
HOTPOT_QUESTIONS = 40     # HotpotQA dev questions (never in training or validation)
N_EXAMPLE_QUESTIONS = 3   # asked over HTTP with their passages printed
# -----------------------------------------------------------------------------------------------


def regrad(*args: str, quiet: bool = False) -> None:
    """Run a `regrad` CLI step as a user would; stop the demo if it fails."""
    command = [sys.executable, "-m", "cli", *args]
    print(f"\n$ regrad {' '.join(args)}", flush=True)
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL if quiet else None)
    if result.returncode != 0:
        sys.exit(f"demo: step `regrad {args[0]}` failed with exit code {result.returncode}")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def build_data(paths: dict[str, Path]) -> None:
    """Steps 2-3: the benchmark, the index, the augmented splits, the training mix."""
    step("2. synthetic benchmark + embedded BM25 index (HotpotQA contexts, 2Wiki corpus, synthetic people)")
    if not (paths["synth"] / "synth.json").exists():
        regrad("synth", "--output", str(paths["synth"]), "--seed", str(SYNTH_SEED))
    index_once(paths["index"], [HOTPOT, DISTRACTORS, paths["synth"] / "corpus.jsonl"])

    step("3. augment: top-3 passages for the synthetic and HotpotQA questions")
    splits = [("synth", paths["synth"], "test"), ("hotpotqa", HOTPOT, "dev")]
    if TRAIN:
        splits += [("synth", paths["synth"], "train"), ("synth", paths["synth"], "dev"), ("hotpotqa", HOTPOT, "train")]
    for dataset, source, split in splits:
        augment(dataset, source, split, paths["index"], paths[f"{dataset}_{split}"])
    hotpot_dev = _lines(paths["hotpotqa_dev"])
    # Validation (checkpoint selection) is the dev tail; the reported questions are its head.
    _write_lines(paths["report"], _lines(paths["synth_test"])[:SYNTH_QUESTIONS]
                 + hotpot_dev[: min(HOTPOT_QUESTIONS, len(hotpot_dev) - VAL_HOTPOT)])
    if TRAIN:
        mix = _lines(paths["synth_train"]) + _lines(paths["hotpotqa_train"]) * HOTPOT_REPEATS
        _write_lines(paths["mix"], _shuffled(mix))
        _write_lines(paths["val"], _lines(paths["synth_dev"])[:VAL_SYNTH] + hotpot_dev[-VAL_HOTPOT:])
        build_fresh_data(paths)
        build_varied_data(paths, hotpot_dev)
        build_more_data(paths)


def index_once(index: Path, corpora: list[Path]) -> None:
    """`regrad index` the corpora into `index`, unless an earlier run finished that already."""
    if (index / ".demo-done").exists():
        print(f"reusing {index}")
        return
    regrad("index", *(arg for corpus in corpora for arg in ("--corpus", str(corpus))), "--index", str(index),
           "--no-progress")
    (index / ".demo-done").touch()


def augment(dataset: str, source: Path, split: str, index: Path, output: Path) -> None:
    regrad("augment", "--dataset", dataset, "--data-path", str(source), "--index", str(index), "--split", split,
           "--top-k", str(TOP_K), "--output", str(output), "--no-progress", quiet=True)


def _shuffled(lines: list[str], seed: int = 0) -> list[str]:
    random.Random(seed).shuffle(lines)
    return lines


def build_fresh_data(paths: dict[str, Path]) -> None:
    """Run 2's training mix: fresh people, indexed with everything else so that their retrieval
    competes with the benchmark's people, then the benchmark's training questions and HotpotQA."""
    step("3b. run 2's mix: 2,000 fresh people (another seed, names unlike the benchmark's)")
    if not (paths["synth_fresh"] / "synth.json").exists():
        regrad("synth", "--output", str(paths["synth_fresh"]), "--seed", str(FRESH_SEED), "--id-prefix", FRESH_PREFIX,
               "--avoid", str(paths["synth"]), "--dev-people", "0", "--test-people", "0")
    index_once(paths["index_fresh"], [HOTPOT, DISTRACTORS, paths["synth"] / "corpus.jsonl",
                                      paths["synth_fresh"] / "corpus.jsonl"])
    augment("synth", paths["synth_fresh"], "train", paths["index_fresh"], paths["synth_fresh_train"])
    _write_lines(paths["mix_fresh"], _shuffled(_lines(paths["synth_train"]) + _lines(paths["synth_fresh_train"])
                                               + _lines(paths["hotpotqa_train"]) * FRESH_HOTPOT_REPEATS))


def build_varied_data(paths: dict[str, Path], hotpot_dev: list[str]) -> None:
    """Run 3's mix and validation: varied people, indexed with everything else, as run 2's fresh ones."""
    step("3c. run 3's mix: 1,600 varied people (many more phrasings and kinds of fact)")
    if not (paths["synth_varied"] / "synth.json").exists():
        regrad("synth", "--output", str(paths["synth_varied"]), "--varied", "--seed", str(VARIED_SEED),
               "--id-prefix", VARIED_PREFIX, "--avoid", str(paths["synth"]), "--train-people", str(VARIED_PEOPLE),
               "--dev-people", str(VARIED_DEV_PEOPLE), "--test-people", "0")
    index_once(paths["index_varied"], [HOTPOT, DISTRACTORS, paths["synth"] / "corpus.jsonl",
                                       paths["synth_varied"] / "corpus.jsonl"])
    for split in ("train", "dev"):
        augment("synth", paths["synth_varied"], split, paths["index_varied"], paths[f"synth_varied_{split}"])
    _write_lines(paths["mix_varied"], _shuffled(_lines(paths["synth_varied_train"]) * VARIED_REPEATS
                                                + _lines(paths["synth_train"])
                                                + _lines(paths["hotpotqa_train"]) * VARIED_HOTPOT_REPEATS))
    _write_lines(paths["val_varied"], _lines(paths["synth_varied_dev"])[:VAL_SYNTH] + hotpot_dev[-VAL_HOTPOT:])


def build_more_data(paths: dict[str, Path]) -> None:
    """Run 5's mix: people in both batches of training phrasings, indexed with everything else."""
    step("3d. run 5's mix: 2,400 more varied people in a second batch of phrasings")
    if not (paths["synth_more"] / "synth.json").exists():
        regrad("synth", "--output", str(paths["synth_more"]), "--varied", "--more-phrasings", "--seed",
               str(MORE_SEED), "--id-prefix", MORE_PREFIX, "--avoid", str(paths["synth"]), "--avoid",
               str(paths["synth_varied"]), "--train-people", str(MORE_PEOPLE), "--dev-people", "0",
               "--test-people", "0")
    index_once(paths["index_more"], [HOTPOT, DISTRACTORS, paths["synth"] / "corpus.jsonl",
                                     paths["synth_varied"] / "corpus.jsonl", paths["synth_more"] / "corpus.jsonl"])
    augment("synth", paths["synth_more"], "train", paths["index_more"], paths["synth_more_train"])
    _write_lines(paths["mix_more"], _shuffled(_lines(paths["synth_more_train"]) + _lines(paths["synth_varied_train"])
                                              + _lines(paths["synth_train"])
                                              + _lines(paths["hotpotqa_train"]) * MORE_HOTPOT_REPEATS,
                                              seed=MORE_SHUFFLE_SEED))


def learner_folder(paths: dict[str, Path]) -> Path:
    """Step 4: the shipped learner, or one meta-trained here with the shipped learner's recipe."""
    if not TRAIN:
        step(f"4. the shipped meta-trained learner: {SHIPPED.relative_to(REPO)}")
        print(f"fingerprint {fingerprint(SHIPPED)[:16]}… (checked when the server loads it); "
              f"REGRAD_DEMO_TRAIN=1 make demo (or make train) reproduces it")
        return SHIPPED
    common = ["--dev", str(paths["val"]), "--preset", TRAIN_PRESET,
              "--max-eval-examples", str(VAL_SYNTH + VAL_HOTPOT), *TRAIN_FLAGS]
    run1 = [*common, "--train", str(paths["mix"]), "--output", str(paths["checkpoint"]),
            "--eval-every", str(EVAL_EVERY)]
    total = max(TRAIN_STEPS, EXTEND_TO)
    step(f"4a. meta-train run 1 of the bundled preset {TRAIN_PRESET} ({total} second-order steps of 4 questions, CPU)")
    train_once(paths["checkpoint"], run1, TRAIN_STEPS)
    # The shipped run 1 was extended: resumed from its step-TRAIN_STEPS state (optimizer included),
    # with the learning-rate schedule now spanning EXTEND_TO steps.
    if EXTEND_TO > TRAIN_STEPS and json.loads((paths["checkpoint"] / "summary.json").read_text())["steps"] < EXTEND_TO:
        regrad("train", *run1, "--max-steps", str(EXTEND_TO), "--resume")
    report_run(paths["checkpoint"])
    step(f"4b. meta-train run 2 ({FRESH_STEPS} steps on the mix with fresh people), then average the two")
    run2 = [*common, "--train", str(paths["mix_fresh"]), "--output", str(paths["checkpoint_fresh"]),
            "--eval-every", str(FRESH_EVAL_EVERY)]
    train_once(paths["checkpoint_fresh"], run2, FRESH_STEPS)
    report_run(paths["checkpoint_fresh"])
    if not (paths["soup"] / "soup.json").exists():
        regrad("export", "--checkpoint", str(paths["checkpoint"] / "best"), "--checkpoint",
               str(paths["checkpoint_fresh"] / "best"), "--output", str(paths["soup"]))
    step(f"4c. meta-train run 3 from their average ({VARIED_STEPS} steps on the mix with varied people)")
    warm_start_and_average(paths, paths["mix_varied"], paths["checkpoint_varied"], start=paths["soup"],
                           average=paths["soup_varied"], flags=VARIED_FLAGS, steps=VARIED_STEPS,
                           eval_every=VARIED_EVAL_EVERY)
    step(f"4d. meta-train run 5 from that average ({MORE_STEPS} steps on the mix with a second batch of phrasings)")
    warm_start_and_average(paths, paths["mix_more"], paths["checkpoint_more"], start=paths["soup_varied"],
                           average=paths["trained"], flags=MORE_FLAGS, steps=MORE_STEPS, eval_every=MORE_EVAL_EVERY)
    return paths["trained"]   # the shipped learner: run 5 averaged with its start


def warm_start_and_average(paths: dict[str, Path], mix: Path, output: Path, *, start: Path, average: Path,
                           flags: tuple[str, ...], steps: int, eval_every: int) -> None:
    """Runs 3 and 5: warm-started from `start` on `mix`, validated on the varied dev people; then the
    average of the run's best checkpoint and its start, exported to `average`."""
    run = ["--dev", str(paths["val_varied"]), "--preset", TRAIN_PRESET,
           "--max-eval-examples", str(VAL_SYNTH + VAL_HOTPOT), *TRAIN_FLAGS, *flags,
           "--train", str(mix), "--output", str(output), "--init-from", str(start), "--eval-every", str(eval_every)]
    train_once(output, run, steps)
    report_run(output)
    if not (average / "soup.json").exists():
        regrad("export", "--checkpoint", str(output / "best"), "--checkpoint", str(start), "--output", str(average))


def fingerprint(learner: Path) -> str:
    return json.loads((learner / "learner.json").read_text())["fingerprint"]


def store_for(learner: Path) -> Path:
    """A store holds one learner's gradients, so each learner's store is named by its fingerprint: a
    demo run after an update, or after `make train`, encodes afresh instead of failing on a stale store."""
    return ARTIFACTS / f"store-{fingerprint(learner)[:12]}"


def train_once(output: Path, arguments: list[str], steps: int) -> None:
    if (output / "summary.json").exists():
        print(f"reusing {output}")
    else:
        regrad("train", *arguments, "--max-steps", str(steps))


def report_run(output: Path) -> None:
    summary = json.loads((output / "summary.json").read_text())
    best = summary["best"]
    print(f"best validation F1 {best['f1']:.1f} at step {best['step']}; {summary['steps']} steps in "
          f"{summary['wall_s']:.0f} s; curves in {output / 'training_curves.png'}")


def build(paths: dict[str, Path]) -> Path:
    step("1. bundled model")
    regrad("model", "prepare")
    build_data(paths)
    checkpoint = learner_folder(paths)
    paths["store"] = store_for(checkpoint)
    step("5. encode the gradients the reported questions need")
    regrad("encode", "--checkpoint", str(checkpoint), "--store", str(paths["store"]),
           "--passages-from", str(paths["report"]), "--top-k", str(TOP_K))
    regrad("store", "info", str(paths["store"]))
    return checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(paths: dict[str, Path], checkpoint: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "cli", "serve", "--checkpoint", str(checkpoint),
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


def ask(url: str, report_file: Path) -> None:
    """Two synthetic questions and one HotpotQA question, answered with and without the gradients."""
    import httpx

    lines = report_file.read_text().splitlines()
    picks = [0, 1, SYNTH_QUESTIONS][:N_EXAMPLE_QUESTIONS]
    for record in (json.loads(lines[i]) for i in picks if i < len(lines)):
        question = record["question"]
        bodies = {mode: {"question": question, "mode": mode, "top_k": TOP_K} for mode in ("regrad", "closed_book")}
        answers = {}
        for mode, body in bodies.items():
            response = httpx.post(f"{url}/answer", json=body, timeout=300)
            response.raise_for_status()
            answers[mode] = response.json()
        regrad_answer = answers["regrad"]
        print(f"\nQ: {question}")
        for p in regrad_answer["passages"]:
            print(f"   [{p['gradient']:>8}] {p['score']:6.2f}  {p['title']}")
        timings = ", ".join(f"{k} {v:.0f} ms" for k, v in regrad_answer["timings_ms"].items())
        print(f"A (regrad): {regrad_answer['answer']!r}   closed-book: {answers['closed_book']['answer']!r}   "
              f"gold: {record['answers'][0]!r}   ({timings})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-only", action="store_true", help="serve the demo's artifacts until stopped")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    aug = ARTIFACTS / "data_aug"
    paths = {
        "index": ARTIFACTS / "index", "checkpoint": ARTIFACTS / "checkpoint",
        "checkpoint_fresh": ARTIFACTS / "checkpoint-fresh", "soup": ARTIFACTS / "checkpoint-soup",
        "synth_fresh": ARTIFACTS / "synth-fresh", "index_fresh": ARTIFACTS / "index-fresh",
        "synth_fresh_train": aug / "synth-fresh" / "train.jsonl", "mix_fresh": aug / "train_mix_fresh.jsonl",
        # run 3 averaged with its start keeps the folder name it had when it was the final learner, so a
        # machine that ran `make train` before reuses it
        "checkpoint_varied": ARTIFACTS / "checkpoint-varied", "soup_varied": ARTIFACTS / "checkpoint-trained",
        "checkpoint_more": ARTIFACTS / "checkpoint-more", "trained": ARTIFACTS / "checkpoint-trained-more",
        "synth_more": ARTIFACTS / "synth-more", "index_more": ARTIFACTS / "index-more",
        "synth_more_train": aug / "synth-more" / "train.jsonl", "mix_more": aug / "train_mix_more.jsonl",
        "synth_varied": ARTIFACTS / "synth-varied", "index_varied": ARTIFACTS / "index-varied",
        "synth_varied_train": aug / "synth-varied" / "train.jsonl",
        "synth_varied_dev": aug / "synth-varied" / "dev.jsonl",
        "mix_varied": aug / "train_mix_varied.jsonl", "val_varied": aug / "val_varied.jsonl",
        "synth": ARTIFACTS / "synth",
        "synth_train": aug / "synth" / "train.jsonl", "synth_dev": aug / "synth" / "dev.jsonl",
        "synth_test": aug / "synth" / "test.jsonl",
        "hotpotqa_train": aug / "hotpotqa" / "train.jsonl", "hotpotqa_dev": aug / "hotpotqa" / "dev.jsonl",
        "mix": aug / "train_mix.jsonl", "val": aug / "val.jsonl", "report": aug / "report.jsonl",
        "predictions": ARTIFACTS / "predictions.jsonl",
    }
    checkpoint = paths["trained"] if TRAIN else SHIPPED
    if args.serve_only:
        if not (checkpoint / "learner.json").exists() or not (store_for(checkpoint) / "manifest.json").exists():
            sys.exit("demo: nothing to serve yet; run `make demo` first")
        print(f"serving the demo on http://127.0.0.1:{args.port} (docs at /docs) with the learner in "
              f"{checkpoint}; Ctrl-C stops")
        paths["store"] = store_for(checkpoint)
        return subprocess.call(serve_command(paths, checkpoint, args.port), cwd=REPO)

    started = time.perf_counter()
    if not HOTPOT.is_file():
        sys.exit(f"demo: {HOTPOT} not found; set REGRAD_DATA_DIR to the shared data folder")
    checkpoint = build(paths)

    step("6. the API: three questions over HTTP, then the reported questions in all five modes")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(serve_command(paths, checkpoint, port), cwd=REPO, start_new_session=True)
    try:
        wait_ready(url, server)
        ask(url, paths["report"])
        regrad("evaluate", "--url", url, "--data", str(paths["report"]), "--mode", "all",
               "--top-k", str(TOP_K), "--output", str(paths["predictions"]), "--no-progress")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; artifacts in {ARTIFACTS}")
    print("regrad_shift applies the gradients of another question's passages: it should stay near closed_book.")
    print("`make serve` serves them on http://127.0.0.1:8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
