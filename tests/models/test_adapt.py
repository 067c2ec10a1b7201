"""The batched per-row path must match the reference's in-place patching, row by row."""

import torch

from models import summed_gradient
from models.adapt import row_deltas


def _logits(learner, input_ids, deltas=None):
    with torch.no_grad(), learner.adapted_rows(deltas):
        return learner.model(input_ids=input_ids).logits


def _snapshot(learner):
    return {n: p.detach().clone() for n, p in learner.model.named_parameters()}


def test_mixed_batch_matches_in_place_patching_per_request(tiny_learner, passages):
    learner = tiny_learner
    grads = torch.stack([
        summed_gradient(learner, passages[0:2]),
        summed_gradient(learner, passages[2:4]),
        torch.zeros(learner.layout.dim),            # a row without knowledge
    ])
    gammas = torch.tensor([1.0, 3.0, 1.0])
    deltas = row_deltas(grads, learner.step_size_vector().detach(), gammas) * 50  # make the effect visible
    ids = learner.tokenizer(["Who was Shirley Temple?"] * 3, return_tensors="pt")["input_ids"]
    before = _snapshot(learner)

    batched = _logits(learner, ids, deltas)
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())  # untouched

    for i in range(3):
        with learner.patched_in_place(deltas[i]):
            oracle = _logits(learner, ids[i : i + 1])
        assert float((batched[i] - oracle[0]).abs().max()) <= 1e-4
    plain = _logits(learner, ids)
    assert float((batched[0] - plain[0]).abs().max()) > 1e-3   # the adaptation did something
    assert torch.equal(batched[2], plain[2])                    # zero delta: exactly unadapted
    assert all(torch.equal(before[n], p) for n, p in learner.model.named_parameters())


def test_gamma_zero_is_exactly_the_unadapted_model(tiny_learner, passages):
    learner = tiny_learner
    g = summed_gradient(learner, passages[:3])
    deltas = row_deltas(g[None], learner.step_size_vector().detach(), torch.tensor([0.0]))
    ids = learner.tokenizer(["Where is Paris?"], return_tensors="pt")["input_ids"]
    assert torch.equal(_logits(learner, ids, deltas), _logits(learner, ids))


def test_row_deltas_follow_the_formula():
    grads = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    alpha = torch.tensor([0.1, 0.5])
    out = row_deltas(grads, alpha, torch.tensor([1.0, 2.0]))
    assert torch.allclose(out, torch.tensor([[-0.1, -1.0], [-0.6, -4.0]]))


def test_wrong_number_of_rows_is_refused(tiny_learner):
    import pytest

    from models.errors import ModelError

    deltas = torch.zeros(2, tiny_learner.layout.dim)
    ids = tiny_learner.tokenizer(["one question"], return_tensors="pt")["input_ids"]
    with pytest.raises(ModelError, match="batch has 1 rows but its row adapters were built for 2"):
        _logits(tiny_learner, ids, deltas)


def test_bf16_base_rows_match_in_place_patching(tiny_learner_factory, passages):
    """bf16 base + fp32 LoRA (the service's CPU/GPU default): a row's correction joins peft's fp32
    LoRA sum before its one rounding to bf16, so it tracks the in-place weights to bf16 precision."""
    learner = tiny_learner_factory(dtype="bfloat16")
    assert {t.dtype for t in learner.lora_tensors().values()} == {torch.float32}
    grads = torch.stack([summed_gradient(learner, passages[0:2]), summed_gradient(learner, passages[2:4])])
    deltas = row_deltas(grads, learner.step_size_vector().detach(), torch.tensor([1.0, 1.0])) * 50
    ids = learner.tokenizer(["Who was Shirley Temple?"] * 2, return_tensors="pt")["input_ids"]
    batched = _logits(learner, ids, deltas)
    for i in range(2):
        with learner.patched_in_place(deltas[i]):
            oracle = _logits(learner, ids[i : i + 1])
        plain = _logits(learner, ids[i : i + 1])
        assert batched.dtype == torch.bfloat16
        assert float((batched[i] - oracle[0]).abs().max()) <= 2e-2
        assert float((oracle[0] - plain[0]).abs().max()) > 0.1   # the adaptation is far above the rounding
