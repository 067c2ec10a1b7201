"""Where generation time goes on this machine: fp32 vs bf16 base weights, 1 row vs 8 rows.

The figures behind the serving choices in docs/benchmarks.md (bf16 base on an AMX CPU, the LM head
on the last position as a 2-D matmul, SDPA during generation):
  1. matmul throughput, fp32 vs bf16: a prompt-sized matmul and the LM head of one decode step;
  2. the LM head on the last position: HF's `logits_to_keep=1` (a 3-D slice) vs a 2-D matmul;
  3. prefill of 8 prompts and one decode step, batch 1 vs batch 8, per dtype (our greedy loop's calls);
  4. batch invariance: max |logit difference| of a prompt run alone vs inside a batch of 8.
Bundled model, untrained learner (LoRA B = 0), 8 real HotpotQA questions, blind prompts.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_QUESTIONS = 8
REPEAT = 5
DATA = Path(os.environ.get("REGRAD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
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


def main() -> None:
    import torch

    lines = (DATA / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[:N_QUESTIONS]
    questions = [json.loads(line)["question_text"] for line in lines]
    report: dict = {"torch_threads": torch.get_num_threads(),
                    "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())}
    matmuls(report)
    for dtype in ("float32", "bfloat16"):
        model_timings(report, questions, dtype)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
