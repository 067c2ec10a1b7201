"""What the `likelihood` composition costs a request: its extra base-model forward, against `softmax`.

In-process (no HTTP), one engine, batches of 8 `regrad` requests on real HotpotQA passages (a build
of `bench/serving_bench.py`: its questions, index, store and learner); every batch is answered once
under each composition and once in mode `rag` (the same passages in the prompt: the reference for
reading them), in turn, so all see the same machine. The likelihood runs twice: *cold*, its prompt
cache emptied first (every passage's prompt runs), and *warm*, the same batch again (every prompt's
KV cached: only the questions run). Prints ms per request for each, the ratios, and the time spent
scoring (`models.relevance`). Last line: JSON.

    .venv/bin/python bench/serving_bench.py ...            # builds ROOT once (see its --help)
    .venv/bin/python bench/composition_cost.py --root /tmp/serving-bench-root
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

BATCH = 8
TOP_K = 3
MAX_NEW_TOKENS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="a serving_bench.py build (q.json, index, store, "
                        "checkpoint)")
    parser.add_argument("--likelihood", default="likelihood", help="the likelihood spec (default: its default T)")
    parser.add_argument("--softmax", default="softmax", help="the baseline spec (default: its default T)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 8 under each composition (after one "
                        "warm-up batch each)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()

    import models.relevance as relevance
    from engine import EngineConfig, Question
    from engine.composition import Composition
    from engine.core import Engine
    from models.base import cpu_has_amx

    questions = json.loads((args.root / "q.json").read_text())
    engine = Engine.from_config(EngineConfig(checkpoint=args.root / "checkpoint", index=str(args.root / "index"),
                                             store=args.root / "store", dtype=args.dtype))
    scoring_s = {"likelihood": 0.0, "likelihood_warm": 0.0}
    score = relevance.question_likelihoods
    current = [""]

    def timed(*a, **kw):
        started = time.perf_counter()
        try:
            return score(*a, **kw)
        finally:
            scoring_s[current[0]] += time.perf_counter() - started

    import engine.core as core

    core.question_likelihoods = timed
    likelihood = Composition.parse(args.likelihood)
    specs = {"softmax": Composition.parse(args.softmax), "likelihood": likelihood, "likelihood_warm": likelihood,
             "rag": None}
    per_request: dict[str, list[float]] = {name: [] for name in specs}
    tokens = {name: 0 for name in specs}
    try:
        for i in range(args.batches + 1):
            batch = [questions[(i * BATCH + j) % len(questions)] for j in range(BATCH)]
            for name, composition in specs.items():
                current[0] = name
                if name == "likelihood":
                    engine.relevance_cache.clear()
                requests = [Question(q, mode="rag" if composition is None else "regrad", top_k=TOP_K,
                                     max_new_tokens=MAX_NEW_TOKENS, composition=composition) for q in batch]
                started = time.perf_counter()
                answers = engine.answer_batch(requests)
                if i:  # the first batch of each warms up
                    per_request[name].append((time.perf_counter() - started) * 1000 / BATCH)
                    tokens[name] += sum(len(engine.learner.tokenizer(a.answer).input_ids) for a in answers)
            if i == 0:
                scoring_s.update(dict.fromkeys(scoring_s, 0.0))
    finally:
        engine.close()
    ms = {name: statistics.median(values) for name, values in per_request.items()}
    scoring_ms = {name: s * 1000 / (args.batches * BATCH) for name, s in scoring_s.items()}
    machine = f"{'AMX' if cpu_has_amx() else 'no AMX'} CPU" if engine.learner.device.type == "cpu" else "GPU"
    for name in specs:
        label = {"likelihood": f"{likelihood}, cold", "likelihood_warm": f"{likelihood}, warm"}.get(
            name, str(specs[name] or "rag (mode)"))
        print(f"{label:<16} {ms[name]:8.1f} ms/request (median of {args.batches} batches of {BATCH}), "
              f"{tokens[name] / (args.batches * BATCH):.1f} answer tokens")
    print(f"likelihood / softmax: cold {ms['likelihood'] / ms['softmax']:.2f}x (scoring "
          f"{scoring_ms['likelihood']:.1f} ms/request), warm {ms['likelihood_warm'] / ms['softmax']:.2f}x (scoring "
          f"{scoring_ms['likelihood_warm']:.1f}); rag / softmax: {ms['rag'] / ms['softmax']:.2f}x")
    print(json.dumps({"softmax_ms_per_request": round(ms["softmax"], 1),
                      "likelihood_ms_per_request": round(ms["likelihood"], 1),
                      "likelihood_over_softmax": round(ms["likelihood"] / ms["softmax"], 2),
                      "scoring_ms_per_request": round(scoring_ms["likelihood"], 1),
                      "likelihood_warm_ms_per_request": round(ms["likelihood_warm"], 1),
                      "likelihood_warm_over_softmax": round(ms["likelihood_warm"] / ms["softmax"], 2),
                      "scoring_warm_ms_per_request": round(scoring_ms["likelihood_warm"], 1),
                      "rag_ms_per_request": round(ms["rag"], 1),
                      "rag_over_softmax": round(ms["rag"] / ms["softmax"], 2), "machine": machine,
                      "softmax": str(specs["softmax"]), "likelihood": str(specs["likelihood"])}))


if __name__ == "__main__":
    main()
