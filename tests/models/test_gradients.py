import torch

from models import format_passage, passage_gradients, summed_gradient
from models.gradients import passage_losses, tokenize_passages


def _one_at_a_time(learner, passages):
    return torch.stack([summed_gradient(learner, [p]) for p in passages])


def test_batched_per_passage_gradients_equal_one_at_a_time(tiny_learner, passages):
    batched = passage_gradients(tiny_learner, passages, batch_size=4)   # mixes lengths -> padding
    single = _one_at_a_time(tiny_learner, passages)
    assert batched.shape == (len(passages), tiny_learner.layout.dim)
    rel = (batched - single).norm(dim=1) / single.norm(dim=1).clamp(min=1e-12)
    assert float(rel[:-1].max()) <= 1e-4
    assert batched[:-1].norm(dim=1).min() > 0


def test_summed_gradient_is_sum_of_per_passage(tiny_learner, passages):
    total = summed_gradient(tiny_learner, passages)
    per = passage_gradients(tiny_learner, passages, batch_size=2)
    assert float((total - per.sum(0)).norm() / total.norm()) <= 1e-4


def test_one_token_passage_gives_zero_gradient_not_nan(tiny_learner):
    grads = passage_gradients(tiny_learner, ["A"])
    assert torch.isfinite(grads).all()
    assert float(grads.abs().sum()) == 0.0
    losses = passage_losses(tiny_learner, tokenize_passages(tiny_learner, ["A", "Paris is big."]))
    assert torch.isfinite(losses).all()


def test_fresh_lora_has_zero_gradient_on_A_but_not_on_B(tiny_learner_factory):
    learner = tiny_learner_factory(randomize_b=False)  # peft init: A Kaiming-uniform, B = 0
    g = summed_gradient(learner, ["Paris is the capital of France."])
    views = learner.layout.split(g)
    a_norm = sum(float(v.norm()) for n, v in views.items() if n.endswith("lora_A"))
    b_norm = sum(float(v.norm()) for n, v in views.items() if n.endswith("lora_B"))
    assert a_norm == 0.0 and b_norm > 0.0


def test_format_passage_is_title_then_text():
    assert format_passage(" Paris ", "Capital of France. ") == "Paris\nCapital of France."
    assert format_passage("", "Only text") == "Only text"


def test_truncation_uses_the_preset_length(tiny_learner):
    batch = tokenize_passages(tiny_learner, ["word " * 500])
    assert batch["input_ids"].shape[1] == tiny_learner.config.max_passage_tokens


def test_no_passages_gives_an_empty_result(tiny_learner):
    assert passage_gradients(tiny_learner, []).shape == (0, tiny_learner.layout.dim)
    assert float(summed_gradient(tiny_learner, []).abs().sum()) == 0.0
