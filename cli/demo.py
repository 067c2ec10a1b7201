"""`make demo`: the whole pipeline on real data and the controlled benchmark, with the shipped learner.

Steps (each one reuses what an earlier run built, so a second run is quick):
  1. prepare the bundled SmolLM2-135M-Instruct;
  2. write the synthetic benchmark (`regrad synth`: invented people, held-out phrasings for test),
     index it with the HotpotQA (IRCoT) contexts and the 2Wiki corpus (tantivy BM25), and augment
     the synthetic test questions and a HotpotQA dev split (top-3 passages each): the first steps of
     the shipped learner's recipe (checkpoints/regrad-smollm2-135m/recipe.toml), run by its runner;
  3. the learner: the meta-trained one shipped in `checkpoints/` (its fingerprint is checked), or,
     with `--recipe FILE`, the one that recipe built (`make train` runs `regrad train --recipe` first);
  4. encode the gradients the reported questions need into a gradient store;
  5. start the API, ask three questions over HTTP, add the composition split's passages live
     (POST /documents: subjects with one fact each, the asked fact beside same-relation facts about
     other subjects, relatives sharing a surname among them), evaluate the reported questions and
     the composition split in every mode (the shift control included), print the table, stop the server.
`python -m cli.demo --serve-only` serves the demo's artifacts until stopped.
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

from offline_tools.errors import RegradError
from offline_tools.training.recipe import Recipe, load_recipe, run_steps

REPO = Path(__file__).resolve().parents[1]

# ---- knobs (the demo's whole configuration) ---------------------------------------------------
SHIPPED = REPO / "checkpoints" / "regrad-smollm2-135m"   # the meta-trained learner `make demo` serves
RECIPE = SHIPPED / "recipe.toml"   # its data steps build the demo's benchmark, index and questions
# What the demo needs from a recipe, by step name: the index, and the questions it reports on.
INDEX, SYNTH_TEST, HOTPOT_DEV = "index", "synth_test", "hotpotqa_dev"
TOP_K = 3
SYNTH_QUESTIONS = 60      # synthetic test questions: unseen people, unseen phrasings
HOTPOT_QUESTIONS = 40     # HotpotQA dev questions (never in training or any run's validation)
N_EXAMPLE_QUESTIONS = 3   # asked over HTTP with their passages printed
# The composition split (`regrad synth --relations composition`): relations held out of training,
# each question's top 3 the asked fact and two same-relation facts about other subjects.
COMPOSITION_EVERY = 4     # every 4th test question: 60 of 240, across all 12 held-out relations
# -----------------------------------------------------------------------------------------------


def regrad(*args: str) -> None:
    """Run a `regrad` CLI step as a user would; stop the demo if it fails."""
    print(f"\n$ regrad {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"demo: step `regrad {args[0]}` failed with exit code {result.returncode}")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def report_questions(recipe: Recipe, output: Path) -> None:
    """The reported questions: the synthetic test head, and the HotpotQA dev head that no run validates
    on (the recipe's validation files take the dev split's tail)."""
    hotpot_dev = recipe.output(HOTPOT_DEV)
    validation_tail = max((part.tail or 0 for s in recipe.steps if s.kind == "mix" for part in s.parts
                           if part.path == hotpot_dev), default=0)
    hotpot = hotpot_dev.read_text().splitlines()
    synth = recipe.output(SYNTH_TEST).read_text().splitlines()
    lines = synth[:SYNTH_QUESTIONS] + hotpot[: min(HOTPOT_QUESTIONS, len(hotpot) - validation_tail)]
    output.write_text("\n".join(lines) + "\n")


def composition_split(work: Path) -> tuple[Path, Path]:
    """The composition benchmark's test passages and the questions the demo reports (their own dataset
    name, so the table shows them apart)."""
    from offline_tools.datasets.augmented import AugmentedRecord, write_augmented

    folder = work / "synth-composition"
    if not (folder / "synth.json").exists():
        regrad("synth", "--relations", "composition", "--output", str(folder))
    questions = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()][::COMPOSITION_EVERY]
    records = [AugmentedRecord(id=q["id"], dataset="composition", question=q["question"], answers=q["answers"],
                               answer_type="short", choices=None, passages=[]) for q in questions]
    write_augmented(work / "data_aug" / "composition.jsonl", records)
    return folder / "corpus.jsonl", work / "data_aug" / "composition.jsonl"


def add_documents(url: str, corpus: Path, split: str = "test", per_request: int = 48) -> None:
    """POST the split's passages to the running server: indexed, and their gradients stored, live."""
    import httpx

    passages = [json.loads(line) for line in corpus.read_text().splitlines()]
    documents = [{"id": p["_id"], "title": p["title"], "text": p["text"]} for p in passages if p["split"] == split]
    added = 0
    for start in range(0, len(documents), per_request):
        response = httpx.post(f"{url}/documents", json={"documents": documents[start : start + per_request]},
                              timeout=600)
        response.raise_for_status()
        added += response.json()["gradients_stored"]
    print(f"\nPOST /documents: {len(documents)} composition-split passages ({added} gradients computed and stored)")


def fingerprint(learner: Path) -> str:
    return json.loads((learner / "learner.json").read_text())["fingerprint"]


def store_for(recipe: Recipe, learner: Path) -> Path:
    """A store holds one learner's gradients, so each learner's store is named by its fingerprint: a
    demo run after an update, or after `make train`, encodes afresh instead of failing on a stale store."""
    return recipe.work / f"store-{fingerprint(learner)[:12]}"


def build(recipe: Recipe, learner: Path, report: Path) -> Path:
    """Steps 1-4; returns the gradient store."""
    step("1. bundled model")
    regrad("model", "prepare")
    step("2. the benchmark, its index and the augmented questions (the recipe's first steps)")
    try:
        run_steps(recipe, recipe.plan([SYNTH_TEST, HOTPOT_DEV]))
    except RegradError as error:
        sys.exit(f"demo: {error}")
    report_questions(recipe, report)
    if learner == SHIPPED:
        step(f"3. the shipped meta-trained learner: {SHIPPED.relative_to(REPO)}")
        print(f"fingerprint {fingerprint(SHIPPED)[:16]}… (checked when the server loads it); "
              f"`make train` rebuilds it with {RECIPE.relative_to(REPO)}")
    else:
        step(f"3. the learner built by {recipe.path}: {learner}")
        if not (learner / "learner.json").is_file():
            sys.exit(f"demo: {learner} holds no learner; run `regrad train --recipe {recipe.path}` first")
    store = store_for(recipe, learner)
    step("4. encode the gradients the reported questions need")
    regrad("encode", "--checkpoint", str(learner), "--store", str(store), "--passages-from", str(report),
           "--top-k", str(TOP_K))
    regrad("store", "info", str(store))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(recipe: Recipe, learner: Path, store: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "cli", "serve", "--checkpoint", str(learner), "--store", str(store),
            "--index", str(recipe.output(INDEX)), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


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
            print(f"   [{p['gradient']:>8}] score {p['score']:6.2f}  weight {p['weight']:4.2f}  {p['title']}")
        timings = ", ".join(f"{k} {v:.0f} ms" for k, v in regrad_answer["timings_ms"].items())
        print(f"A (regrad): {regrad_answer['answer']!r}   closed-book: {answers['closed_book']['answer']!r}   "
              f"gold: {record['answers'][0]!r}   ({timings})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-only", action="store_true", help="serve the demo's artifacts until stopped")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--recipe", type=Path, metavar="FILE",
                        help="serve the learner this recipe built (after `regrad train --recipe FILE`, as `make "
                             "train` does) instead of the shipped one; its data steps build the demo's data too")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe or RECIPE, base=REPO)
    except RegradError as error:
        sys.exit(f"demo: {error}")
    learner = recipe.output(recipe.shipped) if args.recipe else SHIPPED
    report = recipe.work / "data_aug" / "report.jsonl"
    if args.serve_only:
        if not (learner / "learner.json").exists() or not (store_for(recipe, learner) / "manifest.json").exists():
            sys.exit("demo: nothing to serve yet; run `make demo` first")
        print(f"serving the demo on http://127.0.0.1:{args.port} (docs at /docs) with the learner in "
              f"{learner}; Ctrl-C stops")
        return subprocess.call(serve_command(recipe, learner, store_for(recipe, learner), args.port), cwd=REPO)

    started = time.perf_counter()
    store = build(recipe, learner, report)

    composition_corpus, composition = composition_split(recipe.work)
    step("5. the API: three questions, the composition split's passages added live, then every mode")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(serve_command(recipe, learner, store, port), cwd=REPO, start_new_session=True)
    try:
        wait_ready(url, server)
        ask(url, report)
        add_documents(url, composition_corpus)
        regrad("evaluate", "--url", url, "--data", str(report), "--data", str(composition), "--mode", "all",
               "--top-k", str(TOP_K), "--output", str(recipe.work / "predictions.jsonl"), "--no-progress")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; artifacts in {recipe.work}")
    print("regrad_shift applies the gradients of another question's passages: it should stay near closed_book.")
    print("`make serve` serves them on http://127.0.0.1:8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
