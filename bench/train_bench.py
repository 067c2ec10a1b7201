"""Meta-training throughput: tasks/s of the old one-task-at-a-time path vs the batched path, one run.

Both compute the same second-order objective (a test checks they give the same meta-gradient):
  * old: per task, G from a flat (1, D) delta, then the outer forward with logits at *every*
    position (the code before this change, reproduced below as the baseline);
  * one task at a time with the LM head on answer positions only (the CPU default);
  * batched: one forward/backward for all passages of the meta-batch, per-tensor deltas (no slicing
    of a flat vector in backward), one outer forward for all prompts (the GPU default);
  * each with bf16 autocast too, reported with the CPU's bf16 capability.
Tasks: meta-batches of 2 synthetic + 2 HotpotQA questions with their 3 passages, as in the recipe.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import platform
import time

# ---- knobs ----------------------------------------------------------------------------------
META_BATCH = 4
STEPS = 4          # timed meta-steps per path, after one warm-up step
# ---------------------------------------------------------------------------------------------


def _tasks(n: int):
    from bench_data import DATA

    from offline_tools.benchmarks.synth import SynthConfig, generate
    from offline_tools.datasets.augmented import AugmentedPassage, AugmentedRecord

    corpus, questions = generate(SynthConfig(train_people=n, dev_people=0, test_people=0, seed=1))
    passages = {p["_id"]: p for p in corpus}
    synth = []
    for q in questions["train"][:n]:   # the person's facts (2-3 passages), as top-3 retrieval gives
        ids = [pid for pid in passages if pid.startswith(q["entity"] + "-")]
        synth.append(AugmentedRecord(id=q["id"], dataset="synth", question=q["question"], answers=q["answers"],
                                     answer_type="short", choices=None,
                                     passages=[AugmentedPassage(p, passages[p]["title"], passages[p]["text"], 1.0)
                                               for p in ids]))
    hotpot = []
    with open(DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl") as f:
        for line in f:
            obj = json.loads(line)
            spans = [s for a in obj["answers_objects"] for s in a.get("spans") or []]
            if not spans:
                continue
            hotpot.append(AugmentedRecord(
                id=obj["question_id"], dataset="hotpotqa", question=obj["question_text"], answers=spans,
                answer_type="short", choices=None,
                passages=[AugmentedPassage(str(c["id"]), c["title"], c["paragraph_text"], 1.0)
                          for c in obj["contexts"][:3]]))
            if len(hotpot) == n:
                break
    return [t for pair in zip(synth, hotpot) for t in pair]


def _legacy_outer_loss(learner, record, deltas, blind, top_k):
    """The outer loss before this change: logits at every position of prompt + answer."""
    import torch
    import torch.nn.functional as F

    from offline_tools.training.meta import prompt_and_target

    prompt_ids, target_ids = prompt_and_target(learner, record, blind, top_k)
    ids = torch.tensor([prompt_ids + target_ids], device=learner.device)
    with learner.adapted_rows(deltas):
        logits = learner.model(input_ids=ids).logits
    n = len(target_ids)
    return F.cross_entropy(logits[0, -n - 1 : -1].float(), ids[0, -n:])


def _old_step(learner, records):
    from offline_tools.training.meta import inner_delta, task_passages

    for record in records:
        delta = inner_delta(learner, task_passages(record, 3), create_graph=True)
        (_legacy_outer_loss(learner, record, delta, True, 3) / len(records)).backward()


def _new_step(learner, records, bf16=False, batched="on"):
    import torch

    from offline_tools.training.train import TrainArgs, meta_step

    args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], batched=batched)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        meta_step(learner, records, args, scale=1.0 / len(records))


def _tasks_per_s(learner, tasks, step) -> float:
    batches = [tasks[i : i + META_BATCH] for i in range(0, len(tasks), META_BATCH)]
    step(learner, batches[0])                     # warm-up
    learner.zero_grad(set_to_none=True)
    started = time.perf_counter()
    for batch in batches[1 : STEPS + 1]:
        step(learner, batch)
        learner.zero_grad(set_to_none=True)
    return STEPS * META_BATCH / (time.perf_counter() - started)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    import torch

    from models import Learner, load_preset
    from models.base import cpu_has_amx, resolve_dtype

    torch.manual_seed(0)
    learner = Learner.create(load_preset("smollm2-135m-instruct"), dtype="float32")
    tasks = _tasks(META_BATCH * (STEPS + 1) // 2)
    paths = {
        "old: one task at a time, full-sequence logits": _old_step,
        "one task at a time, answer logits (CPU default)": lambda lr, b: _new_step(lr, b, batched="off"),
        "batched, per-tensor deltas, answer logits (GPU default)": _new_step,
        "one task at a time + bf16 autocast": lambda lr, b: _new_step(lr, b, bf16=True, batched="off"),
        "batched + bf16 autocast": lambda lr, b: _new_step(lr, b, bf16=True),
    }
    rates = {name: _tasks_per_s(learner, tasks, step) for name, step in paths.items()}
    old = rates["old: one task at a time, full-sequence logits"]
    bf16_flag = resolve_dtype("auto", "cpu") == "bfloat16"
    print(f"CPU: {_cpu()} ({torch.get_num_threads()} threads; AMX: {cpu_has_amx()}; native bf16: {bf16_flag}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    print(f"second-order meta-training, meta-batch {META_BATCH} (2 synthetic + 2 HotpotQA, top-3 passages):")
    for name, rate in rates.items():
        print(f"  {name:<58} {rate:.3f} tasks/s  ({rate / old:.2f}x old)")
    print(json.dumps({"cpu": _cpu(), "amx": cpu_has_amx(), "native_bf16": bf16_flag,
                      "threads": torch.get_num_threads(), "meta_batch": META_BATCH,
                      "tasks_per_s": {k: round(v, 4) for k, v in rates.items()},
                      "best_vs_old": round(max(rates.values()) / old, 3)}))

if __name__ == "__main__":
    main()
