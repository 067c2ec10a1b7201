"""Learner core timings: one passage gradient, a summed gradient of 3, and a batch-8 adapted
forward vs 8 single adapted forwards (each request its own adapter). Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time

# ---- knobs ----------------------------------------------------------------------------------
REPEAT = 5
BATCH = 8
PROMPT = "Question: which office did the actress who played Corliss Archer hold later in life? Answer:"
# ---------------------------------------------------------------------------------------------


def p50(fn, repeat: int = REPEAT) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    import torch
    from bench_data import hotpot_passages

    from models import Learner, load_preset, passage_gradients, summed_gradient
    from models.adapt import row_deltas

    learner = Learner.create(load_preset("smollm2-135m-instruct"))
    passages = hotpot_passages(3 + BATCH * 3)
    one_ms = p50(lambda: passage_gradients(learner, passages[:1]))
    sum3_ms = p50(lambda: summed_gradient(learner, passages[:3]))
    grads = torch.stack([summed_gradient(learner, passages[3 + 3 * i : 6 + 3 * i]) for i in range(BATCH)])
    deltas = row_deltas(grads, learner.step_size_vector().detach(), torch.ones(BATCH))
    ids = learner.tokenizer([PROMPT] * BATCH, return_tensors="pt")["input_ids"]

    def batched():
        with torch.no_grad(), learner.adapted_rows(deltas):
            learner.model(input_ids=ids)

    def singles():
        with torch.no_grad():
            for i in range(BATCH):
                with learner.adapted_rows(deltas[i : i + 1]):
                    learner.model(input_ids=ids[i : i + 1])

    def unadapted():
        with torch.no_grad():
            learner.model(input_ids=ids)

    batch_ms, singles_ms, plain_ms = p50(batched), p50(singles), p50(unadapted)
    print(f"one passage gradient:            {one_ms:8.1f} ms")
    print(f"summed gradient of 3 passages:   {sum3_ms:8.1f} ms (one batched backward)")
    print(f"batch-{BATCH} adapted forward:        {batch_ms:8.1f} ms   (unadapted batch: {plain_ms:.1f} ms)")
    speedup = singles_ms / batch_ms
    print(f"{BATCH} single adapted forwards:      {singles_ms:8.1f} ms   -> batched is {speedup:.2f}x faster")
    print(json.dumps({"one_passage_gradient_ms": round(one_ms, 1), "summed_gradient_3_ms": round(sum3_ms, 1),
                      "batch8_adapted_forward_ms": round(batch_ms, 1),
                      "batch8_unadapted_forward_ms": round(plain_ms, 1),
                      "eight_single_forwards_ms": round(singles_ms, 1),
                      "batched_speedup": round(singles_ms / batch_ms, 2), "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
