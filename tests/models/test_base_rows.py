"""The per-row LoRA switch behind the `*_base` modes: a switched-off row is the base model's own
(logits and greedy answer), in the same batch as adapted and plain-learner rows, which stay as they
are alone; and rows keep their switch when the running batch changes (continuous batching)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import AnswerRequest, Learner, generate_answers, summed_gradient
from models.decoding import BatchDecoder
from models.generate import next_token_logits, prepare_rows

QUESTION = "Who was Shirley Temple?"


def _base_model_of(learner, seed: int = 0):
    """The tiny learner's base model, rebuilt from the same config and seed (`make_tiny_learner`)."""
    from transformers import LlamaForCausalLM

    config = learner.model.get_base_model().config
    torch.manual_seed(seed)
    base = LlamaForCausalLM(config).eval()
    learned = learner.model.get_base_model().get_input_embeddings().weight
    assert torch.equal(base.get_input_embeddings().weight, learned)  # the same weights, not just the shape
    return base


def _own_logits(model, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, -1].float()


def test_a_switched_off_row_is_the_base_model_and_its_batch_mates_are_unchanged(tiny_learner, passages):
    from models import build_prompt

    base = _base_model_of(tiny_learner)
    g = summed_gradient(tiny_learner, passages[:2]) * 200
    requests = [
        AnswerRequest(QUESTION, gradient=g),                                   # adapted
        AnswerRequest(QUESTION, base=True),                                    # base model
        AnswerRequest("Which film?", context=[("Kiss and Tell", "A 1945 film.")], base=True),
        AnswerRequest(QUESTION),                                               # the learner, unadapted
    ]
    batched = next_token_logits(tiny_learner, requests)
    alone = torch.cat([next_token_logits(tiny_learner, [r]) for r in requests])
    assert torch.allclose(batched, alone, atol=1e-5)                       # nobody's row leaks into another's
    tok = tiny_learner.tokenizer
    for i in (1, 2):
        r = requests[i]
        own = _own_logits(base, tok, build_prompt(tok, r.question, r.answer_type, r.choices, r.context))
        assert torch.allclose(batched[i], own, atol=1e-5)
    # The switch does something: the learner's own LoRA (B randomised) moves the unadapted row away from
    # the base model, and the gradient moves the adapted one further.
    assert not torch.allclose(batched[3], batched[1], atol=1e-3)
    assert not torch.allclose(batched[0], batched[3], atol=1e-3)


def test_base_rows_answer_as_the_base_model_greedy(tiny_learner):
    base = _base_model_of(tiny_learner)
    tok = tiny_learner.tokenizer
    from models import build_prompt

    ids = tok(build_prompt(tok, QUESTION), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = base.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    got = generate_answers(tiny_learner, [AnswerRequest(QUESTION), AnswerRequest(QUESTION, base=True)],
                           max_new_tokens=5, return_raw=True)[1]
    # generate_answers stops at the first newline/end-of-turn token, HF's generate runs all 5 tokens.
    assert got and expected.startswith(got)


def test_switched_off_rows_survive_joins_and_leaves(tiny_learner, passages, monkeypatch):
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    g = summed_gradient(tiny_learner, passages[:2]) * 200
    first = [AnswerRequest(QUESTION, gradient=g), AnswerRequest(QUESTION, base=True)]
    later = [AnswerRequest("What is Paris?", base=True), AnswerRequest("What is Paris?")]
    solo = [generate_answers(tiny_learner, [r], max_new_tokens=n, return_raw=True)[0]
            for r, n in zip(first + later, (3, 8, 6, 4))]

    decoder = BatchDecoder(tiny_learner)
    batch, adapters = prepare_rows(tiny_learner, first)
    decoder.join(["a", "b"], batch, adapters, [3, 8])
    tokens = dict(decoder.step())
    batch, adapters = prepare_rows(tiny_learner, later)
    decoder.join(["c", "d"], batch, adapters, [6, 4])                  # joins mid-generation, rows leave later
    while decoder:
        tokens.update(decoder.step())
    answers = [tok_text for tok_text in (tiny_learner.tokenizer.decode(tokens[k], skip_special_tokens=True)
                                         for k in "abcd")]
    assert answers == solo


def test_a_base_row_cannot_carry_a_gradient(tiny_learner, passages):
    with pytest.raises(ValueError, match="no gradient"):
        AnswerRequest(QUESTION, gradient=summed_gradient(tiny_learner, passages[:1]), base=True)


@pytest.mark.integration
def test_the_shipped_learner_switched_off_is_the_bundled_base_model():
    from models import build_prompt
    from models.base import load_base_model

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "regrad-smollm2-135m"
    fingerprint = json.loads((shipped / "learner.json").read_text())["fingerprint"]
    learner = Learner.load(shipped, expect_fingerprint=fingerprint)
    dtype = str(learner.model.get_base_model().dtype).removeprefix("torch.")
    base, tok = load_base_model(learner.config.base_model, dtype=dtype)
    context = [("Shirley Temple", "Shirley Temple Black was an American actress and US Chief of Protocol.")]
    requests = [AnswerRequest("What was Shirley Temple's government job?", context=context, base=True),
                AnswerRequest("What was Shirley Temple's government job?", context=context)]
    logits = next_token_logits(learner, requests)
    own = _own_logits(base, tok, build_prompt(tok, requests[0].question, context=context))
    assert torch.allclose(logits[0], own, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(logits[1], own, atol=1e-2)                 # the learner's LoRA is not zero
    assert logits[0].argmax() == own.argmax()


def test_a_batch_of_only_base_rows_skips_the_lora_and_stays_the_base_model(tiny_learner):
    """When every row is switched off (the relevance scoring, a batch of `*_base` requests alone) the
    layers run W x only: no LoRA matmul at all, and the logits are still the base model's."""
    base = _base_model_of(tiny_learner)
    requests = [AnswerRequest(QUESTION, base=True), AnswerRequest("Which film?", base=True)]
    lora_calls = []
    hooks = [module.register_forward_hook(lambda *_: lora_calls.append(1))
             for name, module in tiny_learner.model.named_modules() if name.endswith("lora_A.default")]
    try:
        batched = next_token_logits(tiny_learner, requests)
        assert not lora_calls                                      # the fast path: no LoRA term computed
        next_token_logits(tiny_learner, [*requests, AnswerRequest(QUESTION)])
        assert lora_calls                                          # one learner row: every layer runs its LoRA
    finally:
        for hook in hooks:
            hook.remove()
    from models import build_prompt

    tok = tiny_learner.tokenizer
    for row, r in zip(batched, requests, strict=True):
        own = _own_logits(base, tok, build_prompt(tok, r.question, r.answer_type, r.choices, r.context))
        assert torch.allclose(row, own, atol=1e-5)
