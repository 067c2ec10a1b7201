"""Encoding throughput: batched per-passage gradients vs one passage per backward.

Same learner, same real HotpotQA paragraphs; prints passages/s for both and their ratio.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

# ---- knobs ----------------------------------------------------------------------------------
N_PASSAGES = 32
BATCH_SIZES = [1, 8]
# ---------------------------------------------------------------------------------------------


def main() -> None:
    import torch
    from bench_data import hotpot_passages

    from models import Learner, load_preset, passage_gradients

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=N_PASSAGES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
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
    print(json.dumps({"device": args.device, "n_passages": len(passages),
                      **{f"passages_per_s_batch{bs}": round(r, 2) for bs, r in rates.items()},
                      "batched_speedup": round(ratio, 2)}))


if __name__ == "__main__":
    main()
