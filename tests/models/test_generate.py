import pytest
import torch

from models import AnswerRequest, build_prompt, generate_answers, summed_gradient
from models.generate import normalize_answer_type


def test_prompt_uses_chat_template_and_answer_type(tiny_learner):
    tok = tiny_learner.tokenizer
    blind = build_prompt(tok, "Is water wet?", "yes_no")
    assert blind.startswith("<|im_start|>system") and blind.endswith("<|im_start|>assistant\n")
    assert "'yes' or 'no'" in blind and "Context" not in blind
    ctx = build_prompt(tok, "Who?", "short", context=[("Paris", "Capital of France.")])
    assert "Passage 1: Paris\nCapital of France." in ctx
    choice = build_prompt(tok, "Pick one", "choice", choices=["red", "blue"])
    assert "A. red\nB. blue" in choice
    with pytest.raises(ValueError, match="choices"):
        build_prompt(tok, "Pick one", "choice", choices=["only"])


@pytest.mark.parametrize("raw,answer_type,choices,expected", [
    ("Yes, it is.", "yes_no", None, "yes"),
    ("no\nmore text", "yes_no", None, "no"),
    ("B. apple", "choice", ["car", "apple"], "B"),
    ("(C)", "choice", ["a", "b", "c"], "C"),
    ("apple", "choice", ["car", "apple"], "B"),
    ("The answer is clearly", "choice", ["x", "y"], "The answer is clearly"),
    ("Chief of Protocol\nextra", "short", None, "Chief of Protocol"),
])
def test_answer_normalisation(raw, answer_type, choices, expected):
    assert normalize_answer_type(raw, answer_type, choices) == expected


def test_batched_generation_equals_single_requests(tiny_learner, passages):
    g = summed_gradient(tiny_learner, passages[:2]) * 200  # strong enough to change the greedy path
    requests = [
        AnswerRequest("Who was Shirley Temple?", gradient=g),
        AnswerRequest("What is Paris?"),
        AnswerRequest("Is it?", answer_type="yes_no", gradient=g, gamma=0.5),
        AnswerRequest("Which?", answer_type="choice", choices=["a", "b", "c"], context=[("T", "text")]),
    ]
    batched = generate_answers(tiny_learner, requests, max_new_tokens=6, return_raw=True)
    single = [generate_answers(tiny_learner, [r], max_new_tokens=6, return_raw=True)[0] for r in requests]
    assert batched == single
    plain = generate_answers(tiny_learner, [AnswerRequest("Who was Shirley Temple?")], 6, return_raw=True)
    assert isinstance(batched[0], str) and len(requests) == len(batched)
    assert torch.isfinite(g).all() and plain is not None


@pytest.mark.integration
def test_real_model_answers_from_generated_tokens_only(real_learner):
    answers = generate_answers(real_learner, [
        AnswerRequest("What is the capital of France?"),
        AnswerRequest("Is Paris in France?", answer_type="yes_no", context=[("Paris", "Paris is in France.")]),
    ], max_new_tokens=12)
    assert "Paris" in answers[0] and "assistant" not in answers[0] and "\n" not in answers[0]
    assert answers[1] in {"yes", "no"}  # normalised to the yes/no word (the 135M model is often wrong)
