"""A stop bias: added to the end-of-answer tokens' logits after a row's first token, where the row's best
token would begin a new word (`BatchDecoder.join`, `_pick`).

Greedy decoding with the bias picks a stop token wherever the unbiased path would, and otherwise either
the unbiased token or a stop: an answer under a bias is a prefix of the unbiased one (then a stop), cut
only before a token that begins a word. Rows without a bias in the same batch, adapted or not,
prefilled at once or inside a step, are untouched.
"""

import math

import pytest

from models import AnswerRequest, summed_gradient
from models.decoding import BatchDecoder, word_starts
from models.generate import generate_answers, prepare_rows

EOS_ONLY = "models.decoding.stop_token_ids"


def _requests(learner, passages) -> list[AnswerRequest]:
    g = summed_gradient(learner, passages[:2]) * 200   # strong enough to change the greedy path
    return [AnswerRequest("Who was Shirley Temple?", gradient=g), AnswerRequest("What is Paris?"),
            AnswerRequest("Where is it?", base=True), AnswerRequest("Who was Shirley Temple?", gradient=g, gamma=0.5)]


def _run(learner, requests, biases, *, budget=None, late=2, limit=12) -> dict[int, list[int]]:
    """Rows 0..late-1 join at once, the others two steps later (inside a step when `budget` is set)."""
    decoder = BatchDecoder(learner, prefill_budget_tokens=budget)
    batch, adapters = prepare_rows(learner, requests[:late])
    decoder.join(list(range(late)), batch, adapters, [limit] * late, biases[:late])
    done = dict(decoder.step())
    done.update(decoder.step())
    batch, adapters = prepare_rows(learner, requests[late:])
    decoder.join(list(range(late, len(requests))), batch, adapters, [limit] * (len(requests) - late), biases[late:])
    while decoder:
        done.update(decoder.step())
    return done


@pytest.mark.parametrize("budget", [None, 10_000, 3])
def test_a_stop_bias_ends_its_own_rows_only(tiny_learner, passages, monkeypatch, budget):
    monkeypatch.setattr(EOS_ONLY, lambda tok: frozenset({tok.eos_token_id}))
    learner, eos = tiny_learner, tiny_learner.tokenizer.eos_token_id
    requests = _requests(learner, passages)
    plain = _run(learner, requests, [0.0] * 4, budget=budget)
    assert all(len(tokens) > 2 for tokens in plain.values())        # the untrained model runs on
    biased = _run(learner, requests, [1e4, 0.0, 0.0, 1e4], budget=budget)   # rows 0 and 3: stop at a word
    starts = word_starts(learner.tokenizer, len(learner.tokenizer))
    for i in (0, 3):   # the unbiased tokens up to the first one after the first that begins a word, then a stop
        cut = next((j for j in range(1, len(plain[i])) if starts[plain[i][j]]), None)
        assert biased[i] == (plain[i] if cut is None else plain[i][:cut] + [eos])
    assert any(len(biased[i]) < len(plain[i]) for i in (0, 3))
    for i in (1, 2):   # a plain and a base-model row beside them: exactly their tokens
        assert biased[i] == plain[i]


@pytest.mark.parametrize("bias", [0.5, 2.0, 8.0])
def test_an_answer_under_a_bias_is_a_prefix_of_the_unbiased_one(tiny_learner, passages, monkeypatch, bias):
    monkeypatch.setattr(EOS_ONLY, lambda tok: frozenset({tok.eos_token_id}))
    learner, eos = tiny_learner, tiny_learner.tokenizer.eos_token_id
    requests = _requests(learner, passages)
    plain = _run(learner, requests, [0.0] * 4)
    biased = _run(learner, requests, [bias] * 4)
    starts = word_starts(learner.tokenizer, len(learner.tokenizer))
    for i, tokens in biased.items():
        if tokens != plain[i]:   # cut before a token of the unbiased answer that begins a word
            cut = len(tokens) - 1
            assert tokens[-1] == eos and plain[i][:cut] == tokens[:-1] and cut < len(plain[i])
            assert cut >= 1 and starts[plain[i][cut]]


def test_word_starts_are_the_tokens_that_begin_with_whitespace(tiny_learner):
    tok = tiny_learner.tokenizer
    ids = tok.encode(" 881 a pewter snuffbox, 7 beehives")
    starts = word_starts(tok, len(tok) + 3)
    marks = [bool(starts[i]) for i in ids]
    assert marks == [tok.decode([i])[:1].isspace() for i in ids] and any(marks) and not all(marks)
    assert not starts[len(tok):].any()                                 # a padded head's extra ids
    pieces = [tok.decode([i]) for i in ids]
    digits = [m for piece, m in zip(pieces, marks) if piece.strip().isdigit() and not piece[:1].isspace()]
    assert digits and not any(digits)                                  # inside "881": never a word start


def test_generate_answers_takes_one_bias_or_one_per_row(tiny_learner, passages, monkeypatch):
    monkeypatch.setattr(EOS_ONLY, lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    requests = _requests(learner, passages)[:2]
    plain = generate_answers(learner, requests, max_new_tokens=12, return_raw=True)
    assert generate_answers(learner, requests, max_new_tokens=12, return_raw=True, stop_bias=0.0) == plain
    first_only = generate_answers(learner, requests, max_new_tokens=12, return_raw=True, stop_bias=[1e4, 0.0])
    assert first_only[1] == plain[1] and len(first_only[0]) <= len(plain[0]) and plain[0].startswith(first_only[0])


def test_join_refuses_a_bias_that_is_not_a_finite_number_per_row(tiny_learner, passages):
    learner = tiny_learner
    batch, adapters = prepare_rows(learner, _requests(learner, passages)[:2])
    decoder = BatchDecoder(learner)
    with pytest.raises(ValueError, match="stop_bias must be finite"):
        decoder.join([0, 1], batch, adapters, [4, 4], [0.0, math.nan])
    with pytest.raises(ValueError, match="one stop_bias per batch row"):
        decoder.join([0, 1], batch, adapters, [4, 4], [1.0])
    assert len(decoder) == 0                                         # nothing joined
