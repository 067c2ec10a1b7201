"""Meta-training: the meta-gradient reaches LoRA and step sizes, and training lowers the outer loss."""

import pytest
import torch

from offline_tools.augmented import AugmentedPassage, AugmentedRecord
from offline_tools.train import _inner_deltas, _schedule, outer_loss, task_passages


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
