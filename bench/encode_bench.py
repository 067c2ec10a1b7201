"""Encoding throughput: batched per-passage gradients vs one passage per backward; with `--ray`, a Ray encode
(`regrad encode --ray auto --workers N`) vs the single-process `regrad encode` on the same passages.

Same learner, same real HotpotQA paragraphs; prints passages/s for both arms and their ratio.
Last line: one JSON object.

The Ray arm runs both commands end to end into fresh stores with the shipped learner (model load, Ray start-up,
the per-part commits, the merge and its verify included) and also reports the steady rate: passages/s after
the first batch came back, i.e. once every actor had started and loaded its learner.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_PASSAGES = 32
BATCH_SIZES = [1, 8]
RAY_WORKERS = 2
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "regrad-smollm2-135m"
# ---------------------------------------------------------------------------------------------


def batch_arms(args: argparse.Namespace) -> dict:
    import torch
    from bench_data import hotpot_passages

    from models import Learner, load_preset, passage_gradients

    learner = Learner.create(load_preset("smollm2-135m-instruct"), device=args.device,
                             dtype="bfloat16" if args.device == "cuda" else "float32")
    passages = hotpot_passages(args.n)
    passage_gradients(learner, passages[:2], batch_size=2)  # warm-up
    rates = {}
    for bs in BATCH_SIZES:
        started = time.perf_counter()
        passage_gradients(learner, passages, batch_size=bs)
        if args.device == "cuda":
            torch.cuda.synchronize()
        rates[bs] = len(passages) / (time.perf_counter() - started)
        print(f"batch {bs:>2}: {rates[bs]:7.2f} passages/s")
    ratio = rates[BATCH_SIZES[-1]] / rates[BATCH_SIZES[0]]
    print(f"batched / one-at-a-time: {ratio:.2f}x  ({len(passages)} passages, device {args.device}, "
          f"torch threads {torch.get_num_threads()})")
    return {"device": args.device, "n_passages": len(passages),
            **{f"passages_per_s_batch{bs}": round(r, 2) for bs, r in rates.items()},
            "batched_speedup": round(ratio, 2)}


def ray_arm(args: argparse.Namespace) -> dict:
    import torch
    from bench_data import hotpot_passages

    from gradient_store import GradientStore
    from offline_tools.encoding.encode import EncodeArgs, encode
    from offline_tools.encoding.encode_ray import encode_on_ray

    with tempfile.TemporaryDirectory(prefix="encode-bench-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with corpus.open("w") as f:
            for i, text in enumerate(hotpot_passages(args.n)):
                title, _, body = text.partition("\n")
                f.write(json.dumps({"id": f"hp{i}", "title": title, "text": body}) + "\n")

        def run(name: str, fn) -> tuple[dict, float]:
            started = time.perf_counter()
            result = fn(EncodeArgs(checkpoint=str(args.checkpoint), store=f"{tmp}/{name}", passages_from=[],
                                   corpus=[str(corpus)], device=args.device), log=lambda _msg: None)
            return result, time.perf_counter() - started

        single, single_s = run("single", encode)
        ray_result, ray_s = run("ray", lambda a, log: encode_on_ray(a, address="auto", workers=args.workers,
                                                                    log=log))
        with GradientStore.open(f"{tmp}/single") as a, GradientStore.open(f"{tmp}/ray") as b:
            ids = a.ids()
            assert sorted(ids) == sorted(b.ids()), "the two arms stored different ids"
            want, got = a.get(ids), b.get(ids)
            rel = max(float((got[i] - want[i]).norm() / want[i].norm()) for i in ids)
    n = single["encoded"]
    single_rate, ray_rate = n / single_s, n / ray_s
    first = ray_result["startup_seconds"]
    steady = (n - ray_result["first_batch_rows"]) / max(1e-9, ray_result["encode_seconds"] - first)
    print(f"single process: {single_rate:6.2f} passages/s end to end ({single_s:.1f} s, "
          f"{single['passages_per_s']:.2f}/s after the model load)")
    print(f"ray, {args.workers} workers: {ray_rate:6.2f} passages/s end to end ({ray_s:.1f} s: {first:.1f} s to the "
          f"first batch, {steady:.2f}/s after it)")
    print(f"ray / single: {ray_rate / single_rate:.2f}x end to end, "
          f"{steady / single['passages_per_s']:.2f}x steady; max row rel. err {rel:.1e} "
          f"({n} passages, device {args.device}, torch threads {torch.get_num_threads()} in the driver)")
    return {"device": args.device, "n_passages": n, "workers": args.workers,
            "single_passages_per_s": round(single_rate, 2),
            "single_passages_per_s_after_load": round(single["passages_per_s"], 2),
            "ray_passages_per_s": round(ray_rate, 2), "ray_startup_s": round(first, 1),
            "ray_steady_passages_per_s": round(steady, 2),
            "ray_speedup": round(ray_rate / single_rate, 2),
            "ray_steady_speedup": round(steady / single["passages_per_s"], 2),
            "max_rel_err": rel}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=N_PASSAGES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ray", action="store_true", help="Ray encode vs single-process encode (needs regrad[ray])")
    parser.add_argument("--workers", type=int, default=RAY_WORKERS, help="with --ray: actors in the pool")
    parser.add_argument("--checkpoint", default=str(CHECKPOINT), help="with --ray: the learner both arms encode with")
    args = parser.parse_args()
    print(json.dumps(ray_arm(args) if args.ray else batch_arms(args)))


if __name__ == "__main__":
    main()
