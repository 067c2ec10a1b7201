"""Meta-training: the meta-gradient reaches LoRA and step sizes, and training lowers the outer loss."""

import pytest
import torch

from offline_tools.augmented import AugmentedPassage, AugmentedRecord
from offline_tools.errors import UsageError
from offline_tools.meta import inner_delta as _inner_deltas
from offline_tools.meta import outer_losses, prompt_and_target, task_deltas
from offline_tools.train import TrainArgs, _optimizer, _schedule, meta_step, outer_loss, task_passages


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


@pytest.mark.parametrize("first_order", [False, True])
def test_batched_meta_step_equals_one_task_at_a_time(tiny_learner_factory, first_order):
    """The batched path (one forward for every passage / prompt of a meta-batch) is the same objective."""
    grads, losses = {}, {}
    for batched in (False, True):
        learner = tiny_learner_factory(seed=5, randomize_b=True)
        args = TrainArgs(output_dir="unused", train_files=[], dev_files=[], first_order=first_order,
                         batched="on" if batched else "off")
        losses[batched] = meta_step(learner, _records(), args, scale=1 / 3)
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
