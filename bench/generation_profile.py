"""Where generation time goes on this machine: fp32 vs bf16 base weights, 1 row vs 8 rows.

The figures behind the serving choices in docs/benchmarks.md (bf16 base on an AMX CPU, the LM head
on the last position as a 2-D matmul, SDPA during generation):
  1. matmul throughput, fp32 vs bf16: a prompt-sized matmul and the LM head of one decode step;
  2. the LM head on the last position: HF's `logits_to_keep=1` (a 3-D slice) vs a 2-D matmul;
  3. prefill of 8 prompts and one decode step, batch 1 vs batch 8, per dtype (our greedy loop's calls);
  4. batch invariance: max |logit difference| of a prompt run alone vs inside a batch of 8;
  5. per-row adapters (`--only adapted` runs this part alone): the shipped learner, 8 rows each with
     its own gradient, against the same 8 rows unadapted: building the rows' adapters, prefill, one
     decode step, a row joining 7 running rows, a row leaving; and the top ops of one adapted batch
     (adapters, prefill, one new token) in torch's profiler.
Bundled model, untrained learner (LoRA B = 0) for 1-4, 8 real HotpotQA questions, blind prompts.
Last line: one JSON object.

    .venv/bin/python bench/generation_profile.py                   # everything
    .venv/bin/python bench/generation_profile.py --only adapted    # part 5 alone
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_QUESTIONS = 8
REPEAT = 5
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "regrad-smollm2-135m"
GRADIENT_SCALE = 1e-3           # synthetic per-row gradients: N(0, scale^2) per value (timing only)
PROFILE_TOP_OPS = 10
PREFILL_BUDGET_TOKENS = 512     # the fused newcomer's budget (its prompt fits)
# ---------------------------------------------------------------------------------------------


def best_of(fn, repeat: int = REPEAT) -> float:
    """Fastest of `repeat` timed calls after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def matmuls(report: dict) -> None:
    import torch
    import torch.nn.functional as F

    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        w, x = torch.randn(1536, 576, dtype=dtype), torch.randn(528, 576, dtype=dtype)
        seconds = best_of(lambda w=w, x=x: F.linear(x, w), 20)
        report[f"prompt_matmul_tflops_{name}"] = round(2 * 528 * 576 * 1536 / seconds / 1e12, 3)
        head, h = torch.randn(49152, 576, dtype=dtype), torch.randn(8, 576, dtype=dtype)
        report[f"lm_head_8_rows_ms_{name}"] = round(best_of(lambda head=head, h=h: F.linear(h, head)) * 1000, 2)
        print(f"{name:>8}: prompt-sized matmul {report[f'prompt_matmul_tflops_{name}']:.3f} TFLOP/s, "
              f"LM head of 8 rows {report[f'lm_head_8_rows_ms_{name}']:.2f} ms")


def model_timings(report: dict, questions: list[str], dtype: str) -> None:
    import torch

    from models import Learner, build_prompt, load_preset
    from models.decoding import _cache_keyword
    from models.decoding import attention_implementation as _attention_implementation

    learner = Learner.create(load_preset("smollm2-135m-instruct"), dtype=dtype)
    base = learner.model.get_base_model()
    decoder, head, tok = base.get_decoder(), base.get_output_embeddings(), learner.tokenizer
    prompts = [build_prompt(tok, q) for q in questions]

    def encode(batch_prompts):
        batch = tok(batch_prompts, add_special_tokens=False, padding=True, return_tensors="pt",
                    padding_side="left")
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return batch["input_ids"], batch["attention_mask"], positions

    def last_logits(batch_prompts):
        ids, mask, positions = encode(batch_prompts)
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        return head(hidden[:, -1]).float()

    def decode_step_s(batch_prompts) -> float:
        ids, mask, positions = encode(batch_prompts)
        out = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = getattr(out, _cache_keyword(decoder))
        token = head(out.last_hidden_state[:, -1]).argmax(-1)[:, None]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        position = mask.sum(-1, keepdim=True) - 1
        started = time.perf_counter()
        decoder(input_ids=token, attention_mask=mask, position_ids=position, use_cache=True,
                **{_cache_keyword(decoder): cache})
        return time.perf_counter() - started

    with torch.no_grad(), _attention_implementation(base, "sdpa"):
        if dtype == "bfloat16":  # the 3-D slice HF's logits_to_keep=1 hands the LM head
            ids, mask, positions = encode(prompts)
            keep = best_of(lambda: learner.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                                 logits_to_keep=1).logits, 2)
            two_d = best_of(lambda: last_logits(prompts), 2)
            report["prefill_8_logits_to_keep_ms_bfloat16"] = round(keep * 1000)
            report["prefill_8_last_position_2d_ms_bfloat16"] = round(two_d * 1000)
            print(f"bfloat16: prefill of 8 with logits_to_keep=1 {keep * 1000:.0f} ms, "
                  f"with the 2-D last-position LM head {two_d * 1000:.0f} ms")
        prefill_1 = sum(best_of(lambda p=p: last_logits([p]), 2) for p in prompts) / len(prompts)
        prefill_8 = best_of(lambda: last_logits(prompts), 2)
        step_1 = min(decode_step_s([prompts[0]]) for _ in range(REPEAT))
        step_8 = min(decode_step_s(prompts) for _ in range(REPEAT))
        alone = torch.cat([last_logits([p]) for p in prompts])
        together = last_logits(prompts)
        repeated = last_logits([prompts[0]] * len(prompts))
    variance = float((alone - together).abs().max())
    variance_same = float((repeated - alone[0]).abs().max())
    report.update({
        f"prefill_1_ms_{dtype}": round(prefill_1 * 1000), f"prefill_8_ms_{dtype}": round(prefill_8 * 1000),
        f"decode_step_1_ms_{dtype}": round(step_1 * 1000, 1), f"decode_step_8_ms_{dtype}": round(step_8 * 1000, 1),
        f"batch_vs_alone_max_logit_diff_{dtype}": variance,
        f"same_prompt_x8_vs_alone_max_logit_diff_{dtype}": variance_same,
    })
    print(f"{dtype:>8}: prefill 1 prompt {prefill_1 * 1000:.0f} ms, 8 prompts {prefill_8 * 1000:.0f} ms; "
          f"decode step 1 row {step_1 * 1000:.1f} ms, 8 rows {step_8 * 1000:.1f} ms "
          f"({step_8 / step_1:.2f}x); batch vs alone max |logit diff| {variance:.2g} "
          f"(same prompt x8: {variance_same:.2g})")


def adapted_timings(report: dict, questions: list[str]) -> None:
    """The shipped learner on 8 rows, each with its own gradient, against the same rows unadapted.
    Each figure is the fastest of `REPEAT` after a warm-up, adapted and unadapted interleaved, as
    wall time and as the model thread's CPU time (`*_cpu_ms`: what a busy machine disturbs least;
    run with one torch thread, so that all the work is on this thread)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from models import AnswerRequest, Learner
    from models.base import resolve_dtype
    from models.decoding import BatchDecoder
    from models.generate import prepare_rows

    dtype = resolve_dtype("auto", "cpu")
    learner = Learner.load(CHECKPOINT, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(learner.layout.dim, generator=generator) * GRADIENT_SCALE for _ in questions]
    adapted = [AnswerRequest(q, gradient=g) for q, g in zip(questions, gradients, strict=True)]
    plain = [AnswerRequest(q) for q in questions]
    limits = [64] * len(questions)

    def running(requests, budget=None):
        decoder = BatchDecoder(learner, **({"prefill_budget_tokens": budget} if budget else {}))
        batch, adapters = prepare_rows(learner, requests)
        decoder.join(list(range(len(requests))), batch, adapters, limits[: len(requests)])
        decoder.step()  # the first tokens: every row is decoding
        return decoder

    def plan(requests) -> dict:  # figure → (timed call, its untimed set-up)
        return {
            "build_rows_8_ms": (lambda _s: prepare_rows(learner, requests), lambda: None),
            "prefill_8_ms": (lambda state: BatchDecoder(learner).join(list(range(len(requests))), *state, limits),
                             lambda: prepare_rows(learner, requests)),
            "decode_step_8_ms": (lambda decoder: decoder.step(), lambda: running(requests)),
            "join_1_to_7_ms": (lambda state: state[0].join(["new"], *state[1], [64]),
                               lambda: (running(requests[:7]), prepare_rows(learner, requests[7:]))),
            "leave_1_of_8_ms": (lambda decoder: decoder.leave([3]), lambda: running(requests)),
        }

    plans = {"adapted": plan(adapted), "unadapted": plan(plain)}
    figures: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in plans}
    for key in plans["adapted"]:  # adapted and unadapted interleaved: a load change hits both alike
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in plans}
        for _ in range(REPEAT + 1):
            for name, calls in plans.items():
                call, setup = calls[key]
                state = setup()
                started, started_cpu = time.perf_counter(), time.thread_time()
                call(state)
                times[name].append((time.perf_counter() - started, time.thread_time() - started_cpu))
        for name in plans:  # the first is a warm-up; wall and this thread's CPU time, each the fastest
            figures[name][key] = (min(t[0] for t in times[name][1:]) * 1000,
                                  min(t[1] for t in times[name][1:]) * 1000)
    for key in figures["adapted"]:
        (a, a_cpu), (u, u_cpu) = figures["adapted"][key], figures["unadapted"][key]
        report[f"{key}_adapted"], report[f"{key}_unadapted"] = round(a, 1), round(u, 1)
        cpu_key = key.removesuffix("_ms") + "_cpu_ms"
        report[f"{cpu_key}_adapted"], report[f"{cpu_key}_unadapted"] = round(a_cpu, 1), round(u_cpu, 1)
        print(f"{key:>18}: adapted {a:7.1f} ms, unadapted {u:7.1f} ms ({a / u:.2f}x); "
              f"CPU time {a_cpu:7.1f} vs {u_cpu:7.1f} ms ({a_cpu / u_cpu:.2f}x)")

    if "prefill_budget_tokens" in inspect.signature(BatchDecoder).parameters:
        # A newcomer joins 7 running rows, and the batch emits its next tokens: the newcomer's prompt
        # prefilled in a forward of its own, then a decode step of 8 (the running rows stall), or
        # packed into the decode step's forward (one forward).
        newcomer = {}
        for name, budget in (("separate", None), ("fused", PREFILL_BUDGET_TOKENS)):
            def setup(budget=budget):
                return running(adapted[:7], budget), prepare_rows(learner, adapted[7:])

            def call(state):
                state[0].join(["new"], *state[1], [64])
                state[0].step()
            newcomer[name] = (call, setup)
        times = {name: [] for name in newcomer}
        for _ in range(REPEAT + 1):
            for name, (call, setup) in newcomer.items():
                state = setup()
                started_cpu = time.thread_time()
                call(state)
                times[name].append(time.thread_time() - started_cpu)
        for name in newcomer:
            report[f"newcomer_into_7_cpu_ms_{name}"] = round(min(times[name][1:]) * 1000, 1)
        print(f"a newcomer joins 7 adapted rows + their next step: CPU time "
              f"{report['newcomer_into_7_cpu_ms_separate']:.1f} ms with its own prefill forward, "
              f"{report['newcomer_into_7_cpu_ms_fused']:.1f} ms packed into the step")

    def one_batch(requests) -> None:  # what one adapted batch costs: its adapters, prefill, a new token
        decoder = BatchDecoder(learner)
        batch, adapters = prepare_rows(learner, requests)
        decoder.join(list(range(len(requests))), batch, adapters, limits)
        decoder.step()
        decoder.step()

    for name, requests in (("adapted", adapted), ("unadapted", plain)):
        one_batch(requests)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_batch(requests)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total_ms = sum(e.self_cpu_time_total for e in events) / 1000
        report[f"profile_total_ms_{name}"] = round(total_ms, 1)
        report[f"profile_top_ops_{name}"] = {e.key: [round(e.self_cpu_time_total / 1000, 1), e.count]
                                             for e in events[:PROFILE_TOP_OPS]}
        print(f"{name}: one batch of 8 (adapters, prefill, 2 steps) {total_ms:.0f} ms of op time; top ops "
              "(self ms, calls): " + ", ".join(f"{k} {v[0]} ({v[1]})"
                                                for k, v in report[f"profile_top_ops_{name}"].items()))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["adapted"], help="run one part alone")
    args = parser.parse_args()
    lines = (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[:N_QUESTIONS]
    questions = [json.loads(line)["question_text"] for line in lines]
    report: dict = {"torch_threads": torch.get_num_threads(),
                    "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())}
    if args.only is None:
        matmuls(report)
        for dtype in ("float32", "bfloat16"):
            model_timings(report, questions, dtype)
    adapted_timings(report, questions)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
