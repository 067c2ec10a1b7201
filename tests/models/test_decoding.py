"""Iteration-level decoding: rows that join a running batch mid-generation, or leave it early,
get exactly the tokens they get alone."""

import pytest
import torch

from models import AnswerRequest, generate_answers, summed_gradient
from models.decoding import BatchDecoder
from models.generate import answer_text, prepare_rows


def _requests(learner, passages) -> list[AnswerRequest]:
    g1 = summed_gradient(learner, passages[:2]) * 200   # strong enough to change the greedy path
    g2 = summed_gradient(learner, passages[2:4]) * 200
    return [
        AnswerRequest("Who was Shirley Temple?", gradient=g1),
        AnswerRequest("What is Paris?"),
        AnswerRequest("Is it?", answer_type="yes_no", gradient=g2, gamma=0.5),
        AnswerRequest("Which one of these is it, in the end?", answer_type="choice", choices=["a", "b", "c"],
                      context=[("T", "a long passage that makes this prompt the longest of all")]),
        AnswerRequest("Who was Shirley Temple?", gradient=g2),
        AnswerRequest("Where?", gradient=g1, gamma=0.0),
    ]


def _join(decoder, learner, keys, requests, max_new_tokens):
    batch, adapters = prepare_rows(learner, requests)
    decoder.join(keys, batch, adapters, max_new_tokens)


def test_rows_joining_mid_generation_get_their_solo_tokens(tiny_learner, passages):
    learner = tiny_learner
    requests = _requests(learner, passages)
    lengths = [9, 3, 7, 5, 9, 6]
    solo = [generate_answers(learner, [r], max_new_tokens=n, return_raw=True)[0] for r, n in zip(requests, lengths)]

    decoder = BatchDecoder(learner)
    done: dict[int, list[int]] = {}
    _join(decoder, learner, [0, 1], requests[0:2], lengths[0:2])           # regrad + closed-book rows
    done.update(decoder.step())
    done.update(decoder.step())
    _join(decoder, learner, [2, 3], requests[2:4], lengths[2:4])           # join after 2 steps
    done.update(decoder.step())
    _join(decoder, learner, [4], requests[4:5], lengths[4:5])              # one more, one step later
    sizes, late_join_size = [], None
    while decoder:
        sizes.append(len(decoder))
        done.update(decoder.step())
        if done and late_join_size is None and decoder:                    # joins a batch that shrank
            late_join_size = len(decoder)
            _join(decoder, learner, [5], requests[5:6], lengths[5:6])
    assert sorted(done) == list(range(6))
    joined = [answer_text(learner.tokenizer, done[i], r, raw=True) for i, r in enumerate(requests)]
    assert joined == solo
    assert late_join_size is not None and late_join_size >= 1              # row 5 joined mid-generation
    assert max(sizes) >= 3 and min(sizes) < max(sizes)                     # rows really came and went
    assert all(len(done[i]) <= n for i, n in enumerate(lengths))


def test_a_row_that_leaves_early_does_not_change_the_others(tiny_learner, passages):
    learner = tiny_learner
    requests = _requests(learner, passages)[:4]
    solo = [generate_answers(learner, [r], max_new_tokens=8, return_raw=True)[0] for r in requests]
    decoder = BatchDecoder(learner)
    _join(decoder, learner, list(range(4)), requests, [8] * 4)
    done = dict(decoder.step())
    decoder.leave([3])                     # the longest prompt's client left: its row and padding go
    assert 3 not in decoder.keys
    while decoder:
        done.update(decoder.step())
    assert 3 not in done or len(done[3]) == 1
    for i in range(3):
        assert answer_text(learner.tokenizer, done[i], requests[i], raw=True) == solo[i]


def test_unadapted_rows_of_a_mixed_batch_are_exactly_unadapted(tiny_learner, passages):
    """A closed-book row next to regrad rows gets the logits it gets alone with no adapter at all."""
    from models.generate import next_token_logits

    learner = tiny_learner
    g = summed_gradient(learner, passages[:2]) * 200
    mixed = next_token_logits(learner, [AnswerRequest("What is Paris?", gradient=g), AnswerRequest("What is Paris?")])
    plain = next_token_logits(learner, [AnswerRequest("What is Paris?"), AnswerRequest("What is Paris?")])
    assert torch.equal(mixed[1], plain[1])
    assert float((mixed[0] - plain[0]).abs().max()) > 1e-3


@pytest.mark.parametrize("budget", [10_000, 7, 1])
def test_rows_prefilled_inside_a_decode_step_get_their_solo_tokens(tiny_learner, passages, monkeypatch, budget):
    """Continuous batching's fused step: rows that join a running batch are prefilled in the next
    steps' forwards, packed after the running rows' next tokens (all the waiting prompts at once, or
    a chunk of `budget` prompt tokens per step: chunked prefill). Adapted, plain and switched-off
    rows, a waiting row that is withdrawn: every other row gets exactly the tokens it gets alone."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    requests = _requests(learner, passages)[:5] + [AnswerRequest("Where is it?", base=True),
                                                   AnswerRequest("And then?", gradient=None)]
    lengths = [6, 9, 5, 7, 8, 4, 6]
    solo = [generate_answers(learner, [r], max_new_tokens=n, return_raw=True)[0] for r, n in zip(requests, lengths)]

    decoder = BatchDecoder(learner, prefill_budget_tokens=budget)
    _join(decoder, learner, [0, 1], requests[0:2], lengths[0:2])     # nothing runs: prefilled at once
    assert not decoder._pending
    done: dict[int, list[int]] = dict(decoder.step())
    _join(decoder, learner, [2, 3, 9], requests[2:4] + [requests[0]], lengths[2:4] + [5])
    assert len(decoder._pending) == 3 and len(decoder) == 5        # waiting for the next step's forward
    decoder.leave([9])                                             # withdrawn while waiting
    assert 9 not in decoder.keys
    done.update(decoder.step())
    waiting = decoder._pending
    if budget > 1000:
        assert not waiting
    else:                                                          # a chunk of the first prompt per step
        assert len(waiting) == 2 and waiting[0].done == budget and len(decoder) == 4
        assert len(waiting[0].kv) == len(learner.model.get_base_model().get_decoder().layers)
    _join(decoder, learner, [4, 5, 6], requests[4:7], lengths[4:7])
    while decoder:
        done.update(decoder.step())
    assert sorted(done) == list(range(7))
    joined = [answer_text(learner.tokenizer, done[i], r, raw=True) for i, r in enumerate(requests)]
    assert joined == solo


@pytest.mark.parametrize("budget", [10_000, 5])
def test_rows_waiting_when_the_running_rows_all_leave_are_prefilled_alone(tiny_learner, passages, monkeypatch,
                                                                          budget):
    """The step in which the last running row finishes prefills the waiting rows by themselves (under a
    small budget, chunk by chunk over the next steps, with no row decoding)."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    requests = _requests(learner, passages)
    solo = [generate_answers(learner, [r], max_new_tokens=4, return_raw=True)[0] for r in requests[2:5]]
    decoder = BatchDecoder(learner, prefill_budget_tokens=budget)
    _join(decoder, learner, ["first"], requests[:1], [1])             # finishes at its first step
    _join(decoder, learner, [2, 3, 4], requests[2:5], [4, 4, 4])      # waits for that step
    done = dict(decoder.step())
    assert list(done) == ["first"] and len(decoder) == 3
    if budget > 1000:
        assert not decoder._pending
    else:                                                             # chunks, with no row decoding yet
        assert len(decoder._pending) == 3 and decoder._pending[0].done == budget
        assert decoder.step() == [] and decoder._pending[0].done == 2 * budget and not decoder.emitted
    while decoder:
        done.update(decoder.step())
    assert [answer_text(learner.tokenizer, done[i], requests[i], raw=True) for i in (2, 3, 4)] == solo


@pytest.mark.integration
def test_the_real_model_prefilled_in_chunks_gets_its_solo_tokens(real_learner, shared_data):
    """The bundled model, fp32: a `rag` prompt of 4 HotpotQA passages (about 600 tokens) joins two
    rows decoding and is prefilled 128 tokens a step (chunked prefill), beside a short adapted row
    prefilled whole; all four get exactly the tokens they get alone, and the running rows emit a
    token at every step while the long prompt is prefilled."""
    import json

    line = (shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl").read_text().splitlines()[0]
    record = json.loads(line)
    learner = real_learner
    gradient = torch.randn(learner.layout.dim, generator=torch.Generator().manual_seed(0)) * 1e-3
    requests = [AnswerRequest("Who was Shirley Temple?", gradient=gradient),
                AnswerRequest("What is Paris?"),
                AnswerRequest(record["question_text"], context=[(c["title"], c["paragraph_text"])
                                                                for c in record["contexts"][:4]]),
                AnswerRequest(record["question_text"], gradient=gradient)]
    solo = [generate_answers(learner, [r], max_new_tokens=4, return_raw=True)[0] for r in requests]
    decoder = BatchDecoder(learner, prefill_budget_tokens=128)
    _join(decoder, learner, [0, 1], requests[:2], [12, 12])
    done = dict(decoder.step())
    _join(decoder, learner, [2, 3], requests[2:], [4, 4])
    long_prompt = decoder._pending[0].prompt.numel()
    assert long_prompt > 400
    chunk_steps = 0
    while decoder._pending:
        done.update(decoder.step())
        chunk_steps += 1
        assert {key for key, _ in decoder.emitted} >= ({0, 1} - set(done))   # the running rows went on
    assert chunk_steps >= long_prompt // 128                                  # a chunk a step
    while decoder:
        done.update(decoder.step())
    assert [answer_text(learner.tokenizer, done[i][:4], r, raw=True) for i, r in enumerate(requests)] == solo


def test_a_row_withdrawn_between_its_chunks_leaves_no_trace(tiny_learner, passages, monkeypatch):
    """A client that leaves while its prompt is half prefilled: its chunk state goes, the next waiting
    prompt starts from its own first token, and every other row gets its solo tokens."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    requests = _requests(learner, passages)
    solo = [generate_answers(learner, [r], max_new_tokens=6, return_raw=True)[0] for r in requests]
    decoder = BatchDecoder(learner, prefill_budget_tokens=6)
    _join(decoder, learner, [0], requests[:1], [6])
    done = dict(decoder.step())
    _join(decoder, learner, [1, 2, 3], requests[1:4], [6, 6, 6])
    done.update(decoder.step())
    assert decoder._pending[0].row.key == 1 and 0 < decoder._pending[0].done < decoder._pending[0].prompt.numel()
    decoder.leave([1])                                             # gone between two of its chunks
    assert 1 not in decoder.keys and decoder._pending[0].done == 0
    while decoder:
        done.update(decoder.step())
    assert sorted(done) == [0, 2, 3]
    assert [answer_text(learner.tokenizer, done[i], requests[i], raw=True) for i in (0, 2, 3)] == \
        [solo[i] for i in (0, 2, 3)]


def test_tokens_and_finished_rows_are_handed_out_before_the_steps_forward(tiny_learner, passages, monkeypatch):
    """`step(on_emit=...)` gives the step's tokens and finished rows before it runs the next forward,
    so a server streams each token and answers each finished request one forward sooner."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    requests = _requests(learner, passages)[:2]
    decoder = BatchDecoder(learner)
    events: list[str] = []
    forward = BatchDecoder._decode_one

    def decode_one(self):
        events.append("forward")
        forward(self)

    monkeypatch.setattr(BatchDecoder, "_decode_one", decode_one)
    _join(decoder, learner, ["short", "long"], requests, [1, 3])
    handed: dict = {}

    def on_emit(emitted, finished):
        events.append("emit")
        handed.update(finished)

    returned = {}
    while decoder:
        returned.update(decoder.step(on_emit=on_emit))
    assert events[:2] == ["emit", "forward"]                        # the first step: tokens, then the forward
    assert events.count("emit") == len(returned["long"]) and handed == returned
    assert len(returned["short"]) == 1 and events.index("forward") > 0
