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
    # g is applied: the same question without it answers differently (were gradients dropped on the
    # way to the adapter, batched == single would still hold and prove nothing).
    plain = generate_answers(tiny_learner, [AnswerRequest("Who was Shirley Temple?")], 6, return_raw=True)
    assert torch.isfinite(g).all() and all(isinstance(a, str) for a in batched)
    assert batched[0] != plain[0]


@pytest.mark.integration
def test_real_model_answers_from_generated_tokens_only(real_learner):
    answers = generate_answers(real_learner, [
        AnswerRequest("What is the capital of France?"),
        AnswerRequest("Is Paris in France?", answer_type="yes_no", context=[("Paris", "Paris is in France.")]),
    ], max_new_tokens=12)
    assert "Paris" in answers[0] and "assistant" not in answers[0] and "\n" not in answers[0]
    assert answers[1] in {"yes", "no"}  # normalised to the yes/no word (the 135M model is often wrong)


def _assert_same_as_hf_generate(learner, questions: list[str], max_new_tokens: int) -> None:
    """Our batched greedy loop (SDPA, last-position LM head, rows retiring) vs HF `generate`, one by one."""
    tok = learner.tokenizer
    ours = generate_answers(learner, [AnswerRequest(q) for q in questions], max_new_tokens, return_raw=True)
    for question, text in zip(questions, ours):
        ids = tok(build_prompt(tok, question), add_special_tokens=False, return_tensors="pt")
        out = learner.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        reference = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert text and reference.startswith(text)  # ours stops at the first stop token, HF runs on
    # Generation switches to SDPA for its own duration only: meta-training needs eager attention.
    assert learner.model.get_base_model().config._attn_implementation == "eager"


def test_greedy_equals_hf_generate(tiny_learner):
    _assert_same_as_hf_generate(tiny_learner, ["Who was Shirley Temple?", "What is Paris?", "Is it?"], 8)


@pytest.mark.integration
def test_real_model_greedy_equals_hf_generate(real_learner):
    questions = ["What is the capital of France?", "Who wrote Hamlet?", "What government position was held by "
                 "the woman who portrayed Corliss Archer in the film Kiss and Tell?", "Is the sky blue?"]
    _assert_same_as_hf_generate(real_learner, questions, 12)


def test_a_mixed_batch_builds_every_row_on_the_learner_device(tiny_learner):
    """A batch mixing rows with and without gradients (regrad next to rag / closed_book) builds its
    row adapters on the learner's device, for the adapted rows only. Run on the `meta` device, so a
    tensor made on the CPU (the old zero gradient of a row without one) fails here exactly as it
    failed on a GPU."""
    from models.generate import prepare_rows

    tiny_learner.model.to("meta")
    tiny_learner.step_sizes.to("meta")
    gradient = torch.ones(tiny_learner.layout.dim, device="meta")
    requests = [AnswerRequest("q1", gradient=gradient), AnswerRequest("q2"), AnswerRequest("q3", gradient=gradient)]
    batch, adapters = prepare_rows(tiny_learner, requests)
    assert adapters is not None and adapters.batch_size == 3
    assert adapters.rows.device.type == "meta" and adapters.rows.shape == (2,)
    for dA, dB in adapters.deltas.values():
        assert dA.device.type == dB.device.type == "meta" and dA.shape[0] == dB.shape[0] == 2
    assert all(tensor.device.type == "meta" for tensor in batch.values())
