"""How long one long prompt stalls the rows already decoding: whole vs chunked prefill, in-process.

A continuous server's decoding rows wait while a newcomer's prompt is prefilled. With short `regrad`
prompts (about 55 tokens) that wait is one packed step; a `rag` request's passages, or a long chat on
the OpenAI route, is a prompt of a thousand tokens, and prefilled whole it freezes every running row's
stream for as long as that forward takes. Chunked prefill (`prefill_budget_tokens` N: at most N
prompt tokens inside one decode step, a longer prompt over several) bounds the freeze at N tokens'
work. Here 7 adapted rows decode (an untrained learner of the shipped preset, so that answers run on;
each row its own synthetic gradient) and one `rag` newcomer with HotpotQA's 10 passages joins:
  * separate: its prompt prefilled whole in a forward of its own (`prefill_budget_tokens` 0);
  * whole:    packed whole into the next decode step (a budget larger than the prompt);
  * chunked:  packed a chunk of N tokens per step, for each N of `--budgets`.
Per way: the longest stall the running rows see (the longest join or step, in the model thread's CPU
time, fastest of `--repeat`), the steps and the time until the newcomer's first token, and the mean
step. One torch thread (`REGRAD_TORCH_THREADS`), so that CPU time is all the work. Last line: JSON.

    .venv/bin/python bench/prefill_stall_bench.py                    # budgets 512, 256, 128
    .venv/bin/python bench/prefill_stall_bench.py --budgets 64,256
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ---- knobs ----------------------------------------------------------------------------------
RUNNING = 7                     # rows decoding when the newcomer joins
MAX_NEW_TOKENS = 256            # every row's cap: the running rows keep decoding through the measure
GRADIENT_SCALE = 1e-3           # synthetic per-row gradients: N(0, scale^2) per value (timing only)
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "regrad-smollm2-135m"
# ---------------------------------------------------------------------------------------------


def measure(learner, running, newcomer, budget: int | None) -> dict:
    """7 rows decoding; the newcomer joins; steps until it emits its first token. Every join and step
    timed in this thread's CPU time (ms)."""
    from models.decoding import BatchDecoder
    from models.generate import prepare_rows

    decoder = BatchDecoder(learner, **({"prefill_budget_tokens": budget} if budget else {}))
    batch, adapters = prepare_rows(learner, running)
    decoder.join(list(range(len(running))), batch, adapters, [MAX_NEW_TOKENS] * len(running))
    decoder.step()
    decoder.step()                                       # every row decoding, the cache warm
    batch, adapters = prepare_rows(learner, [newcomer])
    started = time.thread_time()
    decoder.join(["new"], batch, adapters, [MAX_NEW_TOKENS])
    stalls = [time.thread_time() - started]             # a separate prefill: the join itself
    steps = 0
    while not any(key == "new" for key, _ in decoder.emitted):
        started = time.thread_time()
        decoder.step()
        stalls.append(time.thread_time() - started)
        steps += 1
        if len(decoder) < RUNNING:
            raise RuntimeError("a running row finished during the measure: raise MAX_NEW_TOKENS")
    return {"longest_stall_ms": max(stalls) * 1000, "first_token_ms": sum(stalls) * 1000,
            "steps_to_first_token": steps, "mean_step_ms": sum(stalls[1:]) / steps * 1000}


def main() -> None:
    import torch
    from serving_bench import cpu_name

    from models import AnswerRequest, Learner
    from models.base import cpu_has_amx, resolve_dtype

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="512,256,128", help="chunked ways: tokens per step, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per way (the fastest of each figure)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("REGRAD_TORCH_THREADS", "1")))
    budgets = [int(b) for b in args.budgets.split(",")]

    lines = (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[: RUNNING + 1]]
    dtype = resolve_dtype("auto", "cpu")
    with tempfile.TemporaryDirectory(prefix="regrad-prefill-stall-") as tmp:
        Learner.create(Learner.load(CHECKPOINT).config).save(tmp)      # untrained: answers run on
        learner = Learner.load(tmp, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    running = [AnswerRequest(r["question_text"], gradient=torch.randn(learner.layout.dim, generator=generator)
                             * GRADIENT_SCALE) for r in records[:RUNNING]]
    last = records[RUNNING]
    newcomer = AnswerRequest(last["question_text"], context=[(c["title"], c["paragraph_text"])
                                                             for c in last["contexts"]])
    from models.generate import prepare_rows
    prompt_tokens = int(prepare_rows(learner, [newcomer])[0]["attention_mask"].sum())

    ways = {"separate": None, "whole": prompt_tokens + 1} | {f"chunked_{b}": b for b in budgets}
    figures: dict[str, list[dict]] = {name: [] for name in ways}
    for _ in range(args.repeat + 1):                      # ways interleaved; the first round warms up
        for name, budget in ways.items():
            figures[name].append(measure(learner, running, newcomer, budget))
    record = {"machine": cpu_name(), "amx": cpu_has_amx(), "base_dtype": str(dtype).removeprefix("torch."),
              "torch_threads": torch.get_num_threads(), "running_rows": RUNNING, "prompt_tokens": prompt_tokens}
    for name, runs in figures.items():
        runs = runs[1:]
        best = {key: min(run[key] for run in runs) for key in runs[0]}
        record[name] = {key: round(value, 1) if isinstance(value, float) else value for key, value in best.items()}
        print(f"{name:>12}: longest stall {best['longest_stall_ms']:7.1f} ms, first token after "
              f"{best['steps_to_first_token']:2d} steps / {best['first_token_ms']:7.1f} ms, mean step "
              f"{best['mean_step_ms']:6.1f} ms")
    for b in budgets:
        record[f"stall_whole_vs_chunked_{b}"] = round(
            record["whole"]["longest_stall_ms"] / record[f"chunked_{b}"]["longest_stall_ms"], 2)
    print(f"newcomer's prompt {prompt_tokens} tokens, {RUNNING} rows decoding; longest stall, whole over chunked: "
          + ", ".join(f"{b}: {record[f'stall_whole_vs_chunked_{b}']}x" for b in budgets))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
