"""Meta-training: the meta-gradient reaches LoRA and step sizes, training lowers the outer loss, `train()`
runs exactly the recipe, and `regrad train` has one flag per `TrainArgs` field with the same defaults."""

import argparse
import copy
import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from offline_tools.datasets.augmented import AugmentedPassage, AugmentedRecord
from offline_tools.errors import UsageError
from offline_tools.training.meta import inner_delta as _inner_deltas
from offline_tools.training.meta import outer_losses, prompt_and_target, task_deltas
from offline_tools.training.train import (
    TrainArgs,
    _next_batch,
    _optimizer,
    _schedule,
    meta_step,
    outer_loss,
    task_passages,
    train,
    validate,
)


def _record(i: int = 0) -> AugmentedRecord:
    return AugmentedRecord(
        id=f"q{i}", dataset="hotpotqa", question="Which office did Shirley Temple hold?",
        answers=["Chief of Protocol"], answer_type="short", choices=None,
        passages=[AugmentedPassage("p1", "Shirley Temple", "Shirley Temple served as Chief of Protocol.", 3.0),
                  AugmentedPassage("p2", "Empty", "", 1.0)],
    )


def test_task_passages_use_the_canonical_format_and_drop_empty():
    assert task_passages(_record(), 3) == ["Shirley Temple\nShirley Temple served as Chief of Protocol."]


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_reaches_lora_and_step_sizes(tiny_learner, first_order):
    record = _record()
    deltas = _inner_deltas(tiny_learner, task_passages(record, 3), create_graph=not first_order)
    outer_loss(tiny_learner, record, deltas, blind=True, top_k=3).backward()
    grads = {n: p.grad for n, p in tiny_learner.lora_tensors().items()}
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values())
    assert all(float(p.grad.abs().sum()) > 0 for p in tiny_learner.step_sizes.parameters())


def test_second_order_term_changes_the_meta_gradient(tiny_learner_factory):
    grads = {}
    for first_order in (False, True):
        learner = tiny_learner_factory(seed=3)
        record = _record()
        deltas = _inner_deltas(learner, task_passages(record, 3), create_graph=not first_order)
        outer_loss(learner, record, deltas, blind=True, top_k=3).backward()
        grads[first_order] = torch.cat([p.grad.reshape(-1) for p in learner.lora_tensors().values()])
    assert not torch.allclose(grads[False], grads[True])  # the Hessian-vector product is really there


def test_a_few_meta_steps_lower_the_outer_loss(tiny_learner):
    params = tiny_learner.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    record = _record()
    losses = []
    for _ in range(8):
        deltas = _inner_deltas(tiny_learner, task_passages(record, 3), create_graph=True)
        loss = outer_loss(tiny_learner, record, deltas, blind=True, top_k=3)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1


def test_schedule_warms_up_then_decays_to_zero():
    assert _schedule(0, 100, 10) == pytest.approx(0.01)
    assert _schedule(10, 100, 10) == pytest.approx(1.0)
    assert _schedule(55, 100, 10) == pytest.approx(0.5)
    assert _schedule(100, 100, 10) == 0.0


def _records() -> list[AugmentedRecord]:
    other = AugmentedRecord(
        id="q9", dataset="synth", question="Where was Kavo Drenski born?", answers=["Velmora"],
        answer_type="short", choices=None,
        passages=[AugmentedPassage("s1", "Kavo Drenski", "Kavo Drenski was born in Velmora in 1873.", 5.0),
                  AugmentedPassage("s2", "Mira Kovski", "Mira Kovski works as a botanist.", 2.0),
                  AugmentedPassage("s3", "Ardo Vel", "Ardo Vel lives in Ostenberg, a long way from the sea.", 1.0)],
    )
    return [_record(0), other, _record(1)]


@pytest.mark.parametrize(("first_order", "spec"), [(False, None), (True, None), (True, "softmax:0.2:3")])
def test_batched_meta_step_equals_one_task_at_a_time(tiny_learner_factory, first_order, spec):
    """The batched path (one forward for every passage / prompt of a meta-batch) is the same objective,
    with a composition's weights' total too (the one-task path once passed its running loss as the total)."""
    from offline_tools.training.train import TaskComposition

    grads, losses = {}, {}
    for batched in (False, True):
        learner = tiny_learner_factory(seed=5, randomize_b=True)
        args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], first_order=first_order,
                         batched="on" if batched else "off", composition=spec or "sum")
        composition = TaskComposition(spec, False, "cpu") if spec else None
        losses[batched] = meta_step(learner, _records(), args, scale=1 / 3, composition=composition)
        grads[batched] = torch.cat([p.grad.reshape(-1) for p in learner.trainable_parameters()])
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-3, atol=1e-6)


def test_task_deltas_are_minus_alpha_times_the_summed_passage_gradient(tiny_learner):
    from models import summed_gradient

    records = _records()
    deltas = task_deltas(tiny_learner, [task_passages(r, 3) for r in records], create_graph=False)
    flat = tiny_learner.layout.flatten({k: v.detach() for k, v in deltas.items()})          # (T, D)
    alpha = tiny_learner.step_size_vector().detach()
    for t, record in enumerate(records):
        expected = -alpha * summed_gradient(tiny_learner, task_passages(record, 3))
        torch.testing.assert_close(flat[t], expected, rtol=1e-4, atol=1e-7)



def test_an_orthogonal_learners_inner_step_applies_the_projected_gradients_as_encoding_does(tiny_learner):
    """`doc_update = "orthogonal"`: both inner steps are −α ⊙ the gradient `passage_gradients` stores, and
    the meta-gradient still reaches the LoRA through the projected step."""
    from models import passage_gradients

    records = _records()
    shared = task_deltas(tiny_learner, [task_passages(r, 3) for r in records], create_graph=False)
    tiny_learner.config.doc_update = "orthogonal"
    alpha = tiny_learner.step_size_vector().detach()
    deltas = task_deltas(tiny_learner, [task_passages(r, 3) for r in records], create_graph=True)
    flat = tiny_learner.layout.flatten({k: v.detach() for k, v in deltas.items()})
    for t, record in enumerate(records):
        expected = -alpha * passage_gradients(tiny_learner, task_passages(record, 3)).sum(0)
        torch.testing.assert_close(flat[t], expected, rtol=1e-4, atol=1e-7)
        one = _inner_deltas(tiny_learner, task_passages(record, 3), create_graph=False)[0].detach()
        torch.testing.assert_close(one, expected, rtol=1e-4, atol=1e-7)
    before = tiny_learner.layout.flatten({k: v.detach() for k, v in shared.items()})
    assert float((flat - before).norm()) > 1e-3 * float(before.norm())
    outer_losses(tiny_learner, records, deltas, blind=True, top_k=3).sum().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in tiny_learner.lora_tensors().values())

def test_outer_losses_equal_cross_entropy_of_the_full_logits(tiny_learner):
    """The LM head on target positions only gives exactly the answer CE of a plain forward."""
    import torch.nn.functional as F

    records = _records()
    with torch.no_grad():
        batched = outer_losses(tiny_learner, records, None, blind=True, top_k=3)
        for t, record in enumerate(records):
            prompt_ids, target_ids = prompt_and_target(tiny_learner, record, blind=True, top_k=3)
            ids = torch.tensor([prompt_ids + target_ids])
            logits = tiny_learner.model(input_ids=ids).logits[0]
            n = len(target_ids)
            expected = F.cross_entropy(logits[-n - 1 : -1].float(), ids[0, -n:])
            assert float(batched[t]) == pytest.approx(float(expected), rel=1e-4)


def test_step_sizes_have_their_own_learning_rate(tiny_learner):
    args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], lr=4e-4, step_size_lr=1e-2)
    groups = _optimizer(tiny_learner, args).param_groups
    assert [g["base_lr"] for g in groups] == [4e-4, 1e-2]
    assert groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in tiny_learner.step_sizes.parameters()}
    paper = _optimizer(tiny_learner, TrainArgs(output_dir="u", train_files=[], dev_files=[], step_size_lr=None))
    assert [g["base_lr"] for g in paper.param_groups] == [4e-4, 4e-4]


def test_invalid_training_options_are_refused_by_name():
    with pytest.raises(UsageError, match="meta_batch_size=0"):
        TrainArgs(output_dir="o", train_files=[], dev_files=[], meta_batch_size=0)


# ------------------------------------------------------------------------- train(): the exact recipe
def _train_files(tmp_path):
    from offline_tools.datasets.augmented import read_augmented, write_augmented

    train_records = _records()
    train_records[2] = dataclasses.replace(train_records[2], question="Who was US Chief of Protocol?")
    dev_records = [dataclasses.replace(train_records[1], id="d9", question="In which town was Kavo Drenski born?"),
                   dataclasses.replace(_record(7), question="What was Shirley Temple's office?")]
    write_augmented(tmp_path / "train.jsonl", train_records)
    write_augmented(tmp_path / "dev.jsonl", dev_records)
    return list(read_augmented(tmp_path / "train.jsonl")), list(read_augmented(tmp_path / "dev.jsonl"))


def _recipe(learner, train_records, dev_records, args):
    """The meta-training recipe written out from the lower-level pieces: (train losses, validations)."""
    optimizer = _optimizer(learner, args)
    steps_per_epoch = math.ceil(len(train_records) / args.meta_batch_size)
    total = args.max_steps  # one epoch: --max-steps alone sets the length
    warmup = int(args.warmup_ratio * total)
    validations = [validate(learner, dev_records, args)]
    losses = []
    for step in range(total):
        epoch, within = divmod(step, steps_per_epoch)
        order = list(range(len(train_records)))
        random.Random(args.seed + epoch).shuffle(order)  # one permutation a pass (--sampler epoch)
        ids = order[within * args.meta_batch_size : (within + 1) * args.meta_batch_size]
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * _schedule(step, total, warmup)
        losses.append(meta_step(learner, [train_records[i] for i in ids], args, scale=1.0 / len(ids)))
        torch.nn.utils.clip_grad_norm_(learner.trainable_parameters(), args.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == total:
            validations.append(validate(learner, dev_records, args))
    return losses, validations


def test_train_logs_exactly_the_recipe(tmp_path, monkeypatch, tiny_learner_factory):
    """A short run of `train()` (2 passes over 3 questions, 2 a batch) logs bit for bit the losses and
    validations of the recipe computed by hand, and writes every file a run is known by."""
    from models.learner import Learner

    train_records, dev_records = _train_files(tmp_path)
    created = []

    def create(cls, config, *, device="cpu", dtype=None, seed=0):
        created.append((config.name, device, dtype, seed))
        return tiny_learner_factory(seed=seed)

    monkeypatch.setattr(Learner, "create", classmethod(create))
    output = tmp_path / "run"
    args = TrainArgs(output_dir=str(output), train_files=[str(tmp_path / "train.jsonl")],
                     dev_files=[str(tmp_path / "dev.jsonl")], meta_batch_size=2, max_steps=3, eval_every=2,
                     max_new_tokens=4, seed=1, warmup_ratio=0.34, bf16="off")  # warm-up: 1 step
    printed = []
    summary = train(args, log=printed.append)

    torch.manual_seed(12345)  # the run seeds everything itself: what was drawn before must not matter
    random.seed(12345)
    losses, validations = _recipe(tiny_learner_factory(seed=args.seed), train_records, dev_records, args)

    assert created == [("smollm2-135m-instruct", "cpu", "float32", 1)]
    log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log] == ["validation", "train", "train", "validation", "train", "validation", "done"]
    assert [e["loss"] for e in log if e["event"] == "train"] == losses  # exactly, not approximately
    logged = [e for e in log if e["event"] == "validation"]
    assert [e["step"] for e in logged] == [0, 2, 3] and [e["tasks_seen"] for e in logged] == [0, 4, 6]
    assert [{k: e[k] for k in validations[0]} for e in logged] == validations
    assert len(set(losses)) == len(losses)  # the batches really differ
    assert [e["lr"] for e in log if e["event"] == "train"] == pytest.approx([4e-6, 4e-4, 2e-4])
    assert [e["step_size_lr"] for e in log if e["event"] == "train"] == pytest.approx([1e-4, 1e-2, 5e-3])

    assert sorted(p.name for p in output.iterdir()) == [
        "best", "last", "summary.json", "train_args.json", "training_curves.png", "training_log.jsonl"]
    assert (output / "best" / "learner.safetensors").is_file()
    assert (output / "last" / "optimizer.safetensors").is_file()
    assert json.loads((output / "last" / "trainer_state.json").read_text())["step"] == 3
    assert json.loads((output / "train_args.json").read_text()) == dataclasses.asdict(args)
    assert json.loads((output / "summary.json").read_text()) == summary
    assert summary["steps"] == 3 and summary["train_examples"] == 3 and summary["dev_examples"] == 2
    assert summary["initial"] == {k: v for k, v in logged[0].items() if k != "event"}
    assert summary["final"] == {k: v for k, v in logged[-1].items() if k != "event"}
    assert summary["mean_train_loss"] == sum(losses) / 3
    assert log[-1]["best"] == summary["best"] and summary["best"]["step"] in (0, 2, 3)
    assert printed[0].startswith("step 0: answer loss ") and len(printed) == 3


def test_init_from_starts_from_a_saved_learner_and_refuses_another_preset(tmp_path, monkeypatch,
                                                                          tiny_learner_factory):
    """--init-from: the run starts from the saved weights (its step-0 validation is theirs, not the fresh
    init's) with a fresh optimizer; a learner of another preset is refused before anything is written."""
    from models import LearnerMismatchError
    from models.learner import Learner

    _, dev_records = _train_files(tmp_path)
    monkeypatch.setattr(Learner, "create", classmethod(
        lambda cls, config, *, device="cpu", dtype=None, seed=0: tiny_learner_factory(seed=seed)))
    saved = tiny_learner_factory(seed=5)
    saved.save(tmp_path / "shipped")
    args = TrainArgs(output_dir=str(tmp_path / "run"), train_files=[str(tmp_path / "train.jsonl")],
                     dev_files=[str(tmp_path / "dev.jsonl")], meta_batch_size=2, max_steps=1, eval_every=1,
                     max_new_tokens=4, seed=1, bf16="off", init_from=str(tmp_path / "shipped"))
    summary = train(args, log=lambda line: None)
    warm = tiny_learner_factory(seed=1)  # the run's own base model (a tiny base is random per seed) ...
    fresh = validate(warm, dev_records, args)
    warm.load_weights(tmp_path / "shipped")  # ... with the saved LoRA and step sizes
    expected = validate(warm, dev_records, args)
    assert {k: summary["initial"][k] for k in expected} == expected != fresh
    assert json.loads((tmp_path / "run" / "train_args.json").read_text())["init_from"] == str(tmp_path / "shipped")

    tiny_learner_factory(step_size_mode="same", seed=5).save(tmp_path / "other")
    other = dataclasses.replace(args, output_dir=str(tmp_path / "run2"), init_from=str(tmp_path / "other"))
    with pytest.raises(LearnerMismatchError, match="--init-from .*other"):
        train(other, log=lambda line: None)
    assert not (tmp_path / "run2").exists()



def test_doc_update_switches_a_warm_start_and_resume_keeps_what_the_run_was_trained_with(
        tmp_path, monkeypatch, tiny_learner_factory):
    """--doc-update orthogonal from a shared checkpoint: the run saves an orthogonal learner; --resume keeps
    it without the flag and refuses the other setting; a warm start from that learner stays orthogonal."""
    from models import Learner as LearnerClass

    _train_files(tmp_path)
    monkeypatch.setattr(LearnerClass, "create", classmethod(
        lambda cls, config, *, device="cpu", dtype=None, seed=0: tiny_learner_factory(seed=seed)))
    tiny_learner_factory(seed=5).save(tmp_path / "shipped")
    args = TrainArgs(output_dir=str(tmp_path / "run"), train_files=[str(tmp_path / "train.jsonl")],
                     dev_files=[str(tmp_path / "dev.jsonl")], meta_batch_size=2, max_steps=2, eval_every=1,
                     max_new_tokens=4, seed=1, bf16="off", init_from=str(tmp_path / "shipped"),
                     doc_update="orthogonal", stop_after=1)
    train(args, log=lambda line: None)
    saved = LearnerClass.read_meta(tmp_path / "run" / "last")["config"]
    assert saved["doc_update"] == "orthogonal"
    with pytest.raises(UsageError, match="--doc-update shared: .* was trained with orthogonal"):
        train(dataclasses.replace(args, resume=True, doc_update="shared"), log=lambda line: None)
    summary = train(dataclasses.replace(args, resume=True, doc_update=None, stop_after=None),
                    log=lambda line: None)
    assert summary["steps"] == 2
    assert LearnerClass.read_meta(tmp_path / "run" / "last")["config"]["doc_update"] == "orthogonal"
    train(dataclasses.replace(args, output_dir=str(tmp_path / "again"), init_from=str(tmp_path / "run" / "last"),
                              doc_update=None, max_steps=1, stop_after=None), log=lambda line: None)
    assert LearnerClass.read_meta(tmp_path / "again" / "last")["config"]["doc_update"] == "orthogonal"

def test_a_run_stopped_after_n_steps_keeps_the_whole_runs_schedule_and_resume_finishes_it(
        tmp_path, monkeypatch, tiny_learner_factory):
    """--stop-after 2 of 4 steps: steps 1-2 at the 4-step schedule's learning rates, validated and saved at
    step 2; --resume then runs steps 3-4 at the rates the whole run would have had."""
    from models.learner import Learner

    _train_files(tmp_path)
    monkeypatch.setattr(Learner, "create", classmethod(
        lambda cls, config, *, device="cpu", dtype=None, seed=0: tiny_learner_factory(seed=seed)))

    def run(output, **options):
        args = TrainArgs(output_dir=str(output), train_files=[str(tmp_path / "train.jsonl")],
                         dev_files=[str(tmp_path / "dev.jsonl")], meta_batch_size=2, max_steps=4, eval_every=3,
                         max_new_tokens=4, seed=1, warmup_ratio=0.25, bf16="off", **options)
        summary = train(args, log=lambda line: None)
        log = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
        return summary, log

    _, whole = run(tmp_path / "whole")
    summary, cut = run(tmp_path / "cut", stop_after=2)
    assert summary["steps"] == 2
    assert json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())["step"] == 2
    assert [e["step"] for e in cut if e["event"] == "validation"] == [0, 2]   # the cut step is validated
    rates = [e["lr"] for e in whole if e["event"] == "train"]
    assert [e["lr"] for e in cut if e["event"] == "train"] == pytest.approx(rates[:2])
    summary, resumed = run(tmp_path / "cut", resume=True)
    assert summary["steps"] == 4
    assert [e["lr"] for e in resumed if e["event"] == "train"] == pytest.approx(rates)
    with pytest.raises(UsageError, match="stop_after"):
        TrainArgs(output_dir="u", train_files=[], dev_files=[], stop_after=0)


def test_the_epoch_sampler_draws_every_question_once_a_pass_and_the_same_on_resume():
    """--sampler epoch: each pass is one permutation (every question once), and batch `step` does not
    depend on the batches drawn before it in this process; reshuffle keeps the old order exactly (each
    step reshuffles the running order in place), repeats within a pass included."""
    n, size = 10, 3
    args = TrainArgs(output_dir="o", train_files=[], dev_files=[], meta_batch_size=size, seed=5)
    steps_per_epoch = math.ceil(n / size)
    order = list(range(n))
    drawn = [_next_batch(order, step, steps_per_epoch, args) for step in range(2 * steps_per_epoch)]
    for epoch in range(2):
        one_pass = [i for batch in drawn[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch] for i in batch]
        assert sorted(one_pass) == list(range(n))
    assert drawn[:steps_per_epoch] != drawn[steps_per_epoch:]   # a fresh permutation each pass
    assert [_next_batch(list(range(n)), step, steps_per_epoch, args) for step in range(5, 8)] == drawn[5:8]

    legacy = dataclasses.replace(args, sampler="reshuffle")
    order, expected = list(range(n)), []
    for step in range(steps_per_epoch):   # the order every shipped run was trained with, written out
        random.Random(legacy.seed).shuffle(order)
        expected.append(order[step * size:(step + 1) * size])
    order = list(range(n))
    reshuffled = [_next_batch(order, step, steps_per_epoch, legacy) for step in range(steps_per_epoch)]
    assert reshuffled == expected
    assert len({i for batch in reshuffled for i in batch}) < n   # it repeats (and misses) questions in a pass
    with pytest.raises(UsageError, match="sampler"):
        TrainArgs(output_dir="o", train_files=[], dev_files=[], sampler="random")


def test_answer_end_names_the_token_a_target_ends_with_and_an_unknown_one_is_refused(
        tmp_path, tiny_learner, monkeypatch, tiny_learner_factory):
    from models.learner import Learner

    tok = tiny_learner.tokenizer
    answer = tok("Chief of Protocol", add_special_tokens=False)["input_ids"]
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert prompt_and_target(tiny_learner, _record(), True, 3, "<|im_start|>")[1] == answer + [im_start]
    assert _parsed([*REQUIRED, "--answer-end", "<|im_start|>"]).answer_end == "<|im_start|>"

    _train_files(tmp_path)
    monkeypatch.setattr(Learner, "create", classmethod(
        lambda cls, config, *, device="cpu", dtype=None, seed=0: tiny_learner_factory(seed=seed)))
    args = TrainArgs(output_dir=str(tmp_path / "run"), train_files=[str(tmp_path / "train.jsonl")],
                     dev_files=[str(tmp_path / "dev.jsonl")], max_steps=1, bf16="off", answer_end="<|no_such|>")
    with pytest.raises(UsageError, match="--answer-end <\\|no_such\\|>: the tokenizer has no token"):
        train(args, log=lambda line: None)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ `regrad train`: flags = TrainArgs
# Every TrainArgs field and its flag. README, Makefile/demo and bench/ use these names: renaming a
# field or a flag, or adding a field, fails here until this table (and the docs) say so.
FLAGS = {
    "output_dir": "--output", "train_files": "--train", "dev_files": "--dev", "preset": "--preset",
    "top_k": "--top-k", "task_k": "--task-k", "blind": "--with-context", "meta_batch_size": "--meta-batch-size",
    "lr": "--lr",
    "step_size_lr": "--step-size-lr", "weight_decay": "--weight-decay", "warmup_ratio": "--warmup-ratio",
    "clip_norm": "--clip-norm", "epochs": "--epochs", "max_steps": "--max-steps", "stop_after": "--stop-after",
    "max_train_examples": "--max-train-examples", "max_eval_examples": "--max-eval-examples",
    "eval_every": "--eval-every", "max_new_tokens": "--max-new-tokens", "seed": "--seed", "sampler": "--sampler",
    "device": "--device",
    "resume": "--resume", "init_from": "--init-from", "first_order": "--first-order", "batched": "--batch",
    "bf16": "--bf16", "composition": "--composition", "answer_end": "--answer-end",
    "doc_update": "--doc-update", "learn_temperature": "--learn-temperature",
}
REQUIRED = ["--train", "a.jsonl", "--dev", "d.jsonl", "--output", "out"]


def _train_parser() -> argparse.ArgumentParser:
    """The parser `cli/commands/train.py` builds (without the flags `cli.main` adds to every command)."""
    from cli.commands.train import register

    subparsers = argparse.ArgumentParser().add_subparsers()
    register(subparsers)
    return subparsers.choices["train"]


def _parsed(argv: list[str]) -> TrainArgs:
    from cli.commands.train import train_args_from

    return train_args_from(_train_parser().parse_args(argv))


def test_every_train_args_field_is_one_flag_with_help():
    from cli.commands.train import RECIPE_FLAGS  # --recipe, --dry-run, --set, --only: tests/cli/test_recipe.py

    actions = [a for a in _train_parser()._actions
               if not isinstance(a, argparse._HelpAction) and a.dest not in RECIPE_FLAGS]
    assert {a.dest: a.option_strings for a in actions} == {name: [flag] for name, flag in FLAGS.items()}
    assert [f.name for f in dataclasses.fields(TrainArgs)] == [a.dest for a in actions] == list(FLAGS)
    assert all((a.help or "").strip() for a in actions)


def test_train_flag_defaults_are_the_train_args_defaults():
    parsed = _parsed(REQUIRED)
    assert parsed == TrainArgs(output_dir="out", train_files=["a.jsonl"], dev_files=["d.jsonl"])
    # the shipped recipe: second order, step sizes at 1e-2 in their own group, batched and bf16 auto
    assert (parsed.first_order, parsed.step_size_lr, parsed.lr, parsed.batched, parsed.bf16, parsed.blind) == (
        False, 1e-2, 4e-4, "auto", "auto", True)
    for action in _train_parser()._actions:
        field = TrainArgs.__dataclass_fields__.get(action.dest)
        if field is not None and field.default is not dataclasses.MISSING:
            assert action.default == field.default, action.dest


def test_train_flags_keep_their_meaning():
    argv = REQUIRED + [
        "--train", "b.jsonl", "--preset", "p", "--top-k", "2", "--with-context", "--meta-batch-size", "8",
        "--lr", "1e-3", "--step-size-lr", "4e-4", "--weight-decay", "0", "--warmup-ratio", "0.2",
        "--clip-norm", "1", "--epochs", "3", "--max-steps", "700", "--max-train-examples", "10",
        "--max-eval-examples", "36", "--eval-every", "100", "--max-new-tokens", "8", "--seed", "7",
        "--sampler", "reshuffle", "--device", "cpu", "--resume", "--init-from", "ck", "--first-order", "--batch", "on",
        "--bf16", "off",
        "--task-k", "1", "--task-k", "5", "--doc-update", "orthogonal",
    ]
    assert _parsed(argv) == TrainArgs(
        output_dir="out", train_files=["a.jsonl", "b.jsonl"], dev_files=["d.jsonl"], preset="p", top_k=2,
        blind=False, meta_batch_size=8, lr=1e-3, step_size_lr=4e-4, weight_decay=0.0, warmup_ratio=0.2,
        clip_norm=1.0, epochs=3, max_steps=700, max_train_examples=10, max_eval_examples=36, eval_every=100,
        max_new_tokens=8, seed=7, sampler="reshuffle", device="cpu", resume=True, init_from="ck", first_order=True,
        batched="on", bf16="off",
        task_k=[1, 5], doc_update="orthogonal",
    )


def test_an_invalid_train_option_is_one_error_line(tmp_path, capsys):
    from cli.main import main

    assert main(["train", *REQUIRED[:4], "--output", str(tmp_path / "o"), "--meta-batch-size", "0"]) == 2
    assert capsys.readouterr().err == "regrad: error: invalid training option(s): meta_batch_size=0\n"
    assert not (tmp_path / "o").exists()


def test_building_the_cli_does_not_import_torch():
    """`regrad` builds the `train` flags from TrainArgs for every command: that must stay cheap."""
    code = "import sys, cli.main; cli.main.build_parser(); print(sorted({'torch', 'tqdm'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ composition in the inner step
def _distractor_record() -> AugmentedRecord:
    """The asked fact first, then the same relation about two other people (a composition-split task)."""
    facts = [("Ada Quillmore", "Vessholm", 30.0), ("Bram Quillmore", "Orrinsey", 21.0), ("Cato Fen", "Tallow", 9.0)]
    return AugmentedRecord(
        id="c0", dataset="synth", question="On which island did Ada Quillmore keep the lighthouse?",
        answers=["Vessholm"], answer_type="short", choices=None,
        passages=[AugmentedPassage(f"p{i}", name, f"{name} kept the lighthouse on {island}.", score)
                  for i, (name, island, score) in enumerate(facts)],
    )


def test_the_inner_step_weights_each_passage_as_served(tiny_learner):
    from engine.composition import Composition
    from models import passage_gradients
    from offline_tools.training.meta import task_weights

    record = _distractor_record()
    weights = task_weights(record, 3, 0.2)
    assert weights.tolist() == pytest.approx(Composition("softmax", 0.2).weights([p.score for p in record.passages]))
    assert task_weights(record, 3, None) is None and task_weights(_record(), 3, 0.2) is None  # one passage: sum
    each = passage_gradients(tiny_learner, task_passages(record, 3))                           # (3, D)
    alpha = tiny_learner.step_size_vector().detach()
    expected = -alpha * (each * weights[:, None]).sum(0)
    one = _inner_deltas(tiny_learner, task_passages(record, 3), create_graph=False, weights=weights)[0]
    batched = task_deltas(tiny_learner, [task_passages(record, 3)], create_graph=False, weights=[weights])
    flat = tiny_learner.layout.flatten({k: v.detach() for k, v in batched.items()})[0]
    torch.testing.assert_close(one.detach(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(flat, expected, rtol=1e-4, atol=1e-7)



def test_a_total_gives_every_task_one_magnitude_in_the_inner_step_as_served(tiny_learner):
    """`--composition softmax:T:M`: a task's weights sum to M at k = 1, 3 or 5 (a lone passage weighs M),
    in the proportions served, and the learner is saved with the total in its served composition."""
    from engine.composition import Composition
    from offline_tools.training.meta import task_weights
    from offline_tools.training.train import TaskComposition

    record = _distractor_record()
    served = Composition.parse("softmax:0.2:3")
    for k in (1, 2, 3):
        weights = task_weights(record, k, 0.2, total=3.0)
        assert float(weights.sum()) == pytest.approx(3.0)
        assert weights.tolist() == pytest.approx(served.weights([p.score for p in record.passages[:k]]))
    assert task_weights(_record(), 3, 0.2, total=3.0).tolist() == [3.0]            # one passage: weight M
    assert task_weights(record, 3, 0.2, [-1.0, -2.0, -3.0], total=2.0).sum() == pytest.approx(2.0)
    composition = TaskComposition("softmax:0.1418:3", True, "cpu")
    args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], composition="softmax:0.1418:3",
                     learn_temperature=True, task_k=[1, 3])
    meta_step(tiny_learner, [_record(), _distractor_record()], args, scale=0.5, composition=composition)
    assert float(composition.log_temperature.grad.abs()) > 0
    assert composition.spec() == "softmax:0.1418:3"

def test_a_learned_temperature_gets_a_meta_gradient_and_is_saved_with_the_learner(tiny_learner, tmp_path):
    from models import Learner
    from offline_tools.training.train import TaskComposition

    args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], composition="softmax:0.5",
                     learn_temperature=True)
    composition = TaskComposition(args.composition, args.learn_temperature, "cpu")
    meta_step(tiny_learner, [_distractor_record(), _distractor_record()], args, scale=0.5, composition=composition)
    grad = composition.log_temperature.grad
    assert grad is not None and float(grad.abs()) > 0          # T co-adapts with theta and alpha
    optimizer = _optimizer(tiny_learner, args, composition)
    assert any(p is composition.log_temperature for g in optimizer.param_groups for p in g["params"])
    with torch.no_grad():
        composition.log_temperature.fill_(math.log(0.25))
    tiny_learner.composition = composition.spec()
    saved = tiny_learner.save(tmp_path / "learner")
    assert Learner.read_meta(saved)["composition"] == "softmax:0.25"
    fixed = TaskComposition("softmax:0.5", False, "cpu")
    assert fixed.temperature() == pytest.approx(0.5) and TaskComposition("sum", False, "cpu").temperature() is None


def test_composition_options_are_checked():
    with pytest.raises(UsageError, match="--composition mean"):
        TrainArgs(output_dir="u", train_files=[], dev_files=[], composition="mean")
    with pytest.raises(UsageError, match="learn-temperature needs"):
        TrainArgs(output_dir="u", train_files=[], dev_files=[], learn_temperature=True)


def test_the_likelihood_composition_weighs_tasks_as_served_and_learns_its_temperature(tiny_learner):
    """--composition likelihood:T: the inner step weighs each task's passages by the base model's
    likelihood of the question given each (as the engine does), computed once per task, and a learned
    T gets a meta-gradient; the learner is saved with `likelihood:T`."""
    from engine.composition import Composition
    from models.relevance import question_likelihoods
    from offline_tools.training.meta import task_likelihoods, task_weights
    from offline_tools.training.train import TaskComposition

    record = _distractor_record()
    [ell] = question_likelihoods(tiny_learner, [(record.question, record.passages)])
    assert task_likelihoods(tiny_learner, [record], 3) == [ell]
    weights = task_weights(record, 3, 0.05, ell)
    assert weights.tolist() == pytest.approx(Composition("likelihood", 0.05).weights(ell), rel=1e-5)
    assert weights.tolist() != pytest.approx(task_weights(record, 3, 0.05).tolist())     # not BM25's

    args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], composition="likelihood:0.5",
                     learn_temperature=True)
    composition = TaskComposition(args.composition, args.learn_temperature, "cpu")
    meta_step(tiny_learner, [record, _distractor_record()], args, scale=0.5, composition=composition)
    assert len(composition._likelihoods) == 1                      # one task, scored once
    grad = composition.log_temperature.grad
    assert grad is not None and float(grad.abs()) > 0
    assert composition.spec() == "likelihood:0.5"
    with pytest.raises(UsageError, match="learn-temperature needs"):
        TrainArgs(output_dir="u", train_files=[], dev_files=[], composition="sum", learn_temperature=True)


def test_a_target_ends_with_the_chat_templates_end_of_turn_whatever_the_tokenizers_eos(tiny_learner, monkeypatch):
    """Targets end with `<|im_end|>`, also under a tokenizer whose eos is another token (as the one an
    H100 converted for run 8, whose answers end with `<|im_start|>`)."""
    tok = tiny_learner.tokenizer
    im_end, im_start = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|im_start|>")
    answer = tok("Chief of Protocol", add_special_tokens=False)["input_ids"]
    assert prompt_and_target(tiny_learner, _record(), blind=True, top_k=3)[1] == answer + [im_end]
    converted = copy.deepcopy(tok)
    converted.eos_token = "<|im_start|>"
    assert converted.eos_token_id == im_start
    monkeypatch.setattr(tiny_learner, "tokenizer", converted)
    assert prompt_and_target(tiny_learner, _record(), blind=True, top_k=3)[1] == answer + [im_end]


def test_tasks_at_several_k_draw_k_per_task_and_step_and_train_as_that_k(tiny_learner):
    """--task-k 1 --task-k 3: each task of a meta-batch keeps its top K passages, K drawn per task and
    step (the same draw on every process and on resume); a task at K = 1 trains exactly as --top-k 1."""
    from offline_tools.training.train import TaskComposition, task_at_k

    record = _distractor_record()
    args = TrainArgs(output_dir="u", train_files=[], dev_files=[], task_k=[1, 3], seed=3)
    assert args.train_k() == 3 and TrainArgs(output_dir="u", train_files=[], dev_files=[], top_k=2).train_k() == 2
    drawn = [task_at_k(record, step, args) for step in range(40)]
    assert {len(r.passages) for r in drawn} == {1, 3}
    assert all(r.passages == record.passages[: len(r.passages)] and r.question == record.question for r in drawn)
    assert [len(task_at_k(record, step, args).passages) for step in range(40)] == [len(r.passages) for r in drawn]
    plain = TrainArgs(output_dir="u", train_files=[], dev_files=[])
    assert task_at_k(record, 5, plain) is record
    with pytest.raises(UsageError, match="task_k"):
        TrainArgs(output_dir="u", train_files=[], dev_files=[], task_k=[3, 0])

    one = next(r for r in drawn if len(r.passages) == 1)
    at_k1 = meta_step(copy.deepcopy(tiny_learner), [one], args, scale=1.0)
    top1 = meta_step(copy.deepcopy(tiny_learner), [record], dataclasses.replace(plain, top_k=1), scale=1.0)
    at_k3 = meta_step(copy.deepcopy(tiny_learner), [record], args, scale=1.0)
    assert at_k1 == pytest.approx(top1, rel=1e-6) and abs(at_k1 - at_k3) > 1e-4   # K changes the task

    # the likelihood composition scores a task once per K it is trained at
    composition = TaskComposition("likelihood:0.5", False, "cpu")
    three = next(r for r in drawn if len(r.passages) == 3)
    ells = composition.likelihoods(tiny_learner, [one, three, one], args.train_k())
    assert [len(e) for e in ells] == [1, 3, 1] and len(composition._likelihoods) == 2
