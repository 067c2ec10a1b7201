"""Serving's row adapters in slots (`models.row_bank`): each row's weights are folded once, equal the
reference's in-place patched weights bit for bit, survive rows joining and leaving in their own slot,
and a batch answers each row as it is answered alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models import AnswerRequest, generate_answers, summed_gradient
from models.adapt import row_deltas
from models.decoding import BatchDecoder, prefill
from models.errors import ModelError
from models.generate import next_token_logits, prepare_rows
from models.row_bank import RowAdapterBank, fill_order


def _patched(learner, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The LoRA tensors as the reference's in-place patch leaves them for one row's delta."""
    with learner.patched_in_place(delta):
        return {name: t.detach().clone() for name, t in learner.lora_tensors().items()}


def _gradients(learner, passages, n: int) -> list[torch.Tensor]:
    return [summed_gradient(learner, passages[i % len(passages) : i % len(passages) + 2]) * (i + 1)
            for i in range(n)]


def test_fill_order_moves_the_last_rows_into_the_holes():
    assert fill_order(5, [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    assert fill_order(5, [0, 2, 3, 4]) == [0, 4, 2, 3]          # one left: the last row takes its place
    assert fill_order(6, [1, 3, 4, 5]) == [4, 1, 5, 3]
    assert fill_order(4, [0, 1]) == [0, 1]                      # the last rows left: nothing moves
    assert fill_order(3, []) == []


@pytest.mark.parametrize("step_size_mode", ["tie", "full"])
def test_a_folded_row_is_the_in_place_patched_weights_bit_for_bit(tiny_learner_factory, passages, step_size_mode):
    learner = tiny_learner_factory(step_size_mode=step_size_mode)
    if step_size_mode == "full":  # per-element step sizes that differ
        with torch.no_grad():
            for p in learner.step_sizes.values():
                p.uniform_(0.005, 0.02)
    grads, gammas = _gradients(learner, passages, 2), [1.0, 0.37]
    bank = RowAdapterBank(learner.lora_tensors(), capacity=1)            # grows to 2
    bank.write(grads, gammas, [0, 1], learner.step_size_tensors(), learner.layout)
    alpha = learner.step_size_vector().detach()
    for slot in range(2):
        delta = row_deltas(grads[slot][None], alpha, torch.tensor([gammas[slot]]))[0]
        expected = _patched(learner, delta)
        for name, weight in expected.items():
            assert torch.equal(bank.slots[name][slot], weight), name
    assert bank.capacity >= 2 and bank.rows == [0, 1]


def test_rows_that_leave_free_their_slot_and_the_others_keep_their_weights(tiny_learner, passages):
    learner = tiny_learner
    grads = _gradients(learner, passages, 5)
    bank = RowAdapterBank(learner.lora_tensors(), capacity=5)
    bank.write(grads, [1.0] * 5, [0, 1, 2, 3, 4], learner.step_size_tensors(), learner.layout)
    own = {row: {name: buffer[slot].clone() for name, buffer in bank.slots.items()}
           for slot, row in enumerate(bank.rows)}
    order = fill_order(5, [0, 2, 3, 4])                                   # batch row 1 leaves
    bank.keep(order)
    assert bank.count == 4
    assert bank.adapters(4).covers_every_row                              # slots still follow the batch
    for slot, new_row in enumerate(bank.rows):
        old_row = order[new_row]
        assert all(torch.equal(buffer[slot], own[old_row][name]) for name, buffer in bank.slots.items())
    second = [3, 0]                                                       # two leave, the others reorder
    bank.keep(second)
    assert bank.count == 2 and sorted(bank.rows) == [0, 1]
    assert bank.adapters(2).covers_every_row == (bank.rows == [0, 1])
    for slot, new_row in enumerate(bank.rows):
        original = order[second[new_row]]
        assert all(torch.equal(buffer[slot], own[original][name]) for name, buffer in bank.slots.items())


def test_folded_rows_give_the_delta_path_logits_in_any_slot_order(tiny_learner, passages):
    """The serving form (own weights, B_i A_i x) equals meta-training's (shared LoRA + correction),
    with the slots in batch order, in another order, and for a batch that mixes adapted rows with
    plain and switched-off ones."""
    learner = tiny_learner
    grads = [g * 50 for g in _gradients(learner, passages, 2)]
    requests = [AnswerRequest("Who was Shirley Temple?", gradient=grads[0]),
                AnswerRequest("What is Paris?"),
                AnswerRequest("Is it?", gradient=grads[1], gamma=0.5),
                AnswerRequest("Where?", base=True)]
    served = next_token_logits(learner, requests)
    batch, adapters = prepare_rows(learner, requests)
    assert adapters.folded and adapters.rows.tolist() == [0, 2] and not adapters.covers_every_row
    deltas = row_deltas(torch.stack(grads), learner.step_size_vector().detach(), torch.tensor([1.0, 0.5]))
    delta_path = replace(learner.row_adapters(deltas, rows=torch.tensor([0, 2]), batch_size=4), off=adapters.off)
    head = learner.model.get_base_model().get_output_embeddings()

    def logits_with(row_adapters) -> torch.Tensor:
        with torch.no_grad(), learner.using_rows(row_adapters):
            return head(prefill(learner, batch)[0][:, -1]).float()

    by_deltas = logits_with(delta_path)
    assert float((served - by_deltas).abs().max()) <= 1e-4
    assert torch.equal(served[1], by_deltas[1]) and torch.equal(served[3], by_deltas[3])  # plain, off
    assert float((served[0] - served[1]).abs().max()) > 1e-3                 # the adaptation did something
    # Slots in another order than the batch's: the same logits, bit for bit.
    swapped = RowAdapterBank(learner.lora_tensors(), capacity=2)
    swapped.write([grads[1], grads[0]], [0.5, 1.0], [2, 0], learner.step_size_tensors(), learner.layout)
    assert torch.equal(logits_with(swapped.adapters(4, adapters.off)), served)


def test_all_adapted_rows_joining_and_leaving_get_their_solo_tokens(tiny_learner, passages, monkeypatch):
    """Every row adapted (the slots stay aligned with the batch: no gather), rows leaving at
    different steps and joining a running batch: each row's tokens are its tokens alone."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    grads = [g * 200 for g in _gradients(learner, passages, 6)]
    questions = ["Who was Shirley Temple?", "What is Paris?", "Is it?", "Which one?", "Where?", "When?"]
    requests = [AnswerRequest(q, gradient=g, gamma=0.5 + i / 4) for i, (q, g) in enumerate(zip(questions, grads))]
    lengths = [2, 7, 4, 6, 3, 5]
    solo = [generate_answers(learner, [r], max_new_tokens=n, return_raw=True)[0] for r, n in zip(requests, lengths)]

    decoder = BatchDecoder(learner)
    batch, adapters = prepare_rows(learner, requests[:4])
    decoder.join([0, 1, 2, 3], batch, adapters, lengths[:4])
    assert decoder._bank is adapters.bank                        # taken over: no copy
    done: dict[int, list[int]] = {}
    aligned: list[bool] = []
    step = 0
    while decoder:
        done.update(decoder.step())
        step += 1
        if decoder._adapters is not None:
            aligned.append(decoder._adapters.covers_every_row)
        if step == 1:                                            # two join the running batch
            batch, adapters = prepare_rows(learner, requests[4:6])
            decoder.join([4, 5], batch, adapters, lengths[4:6])
            assert decoder._bank is not adapters.bank and decoder._bank.count == len(decoder)
    assert sorted(done) == list(range(6))
    texts = [learner.tokenizer.decode(done[i], skip_special_tokens=True) for i in range(6)]
    assert texts == solo
    assert aligned and all(aligned)


def test_a_row_given_as_deltas_joins_a_folded_batch(tiny_learner, passages, monkeypatch):
    """Adapters built by `Learner.row_adapters` (deltas, as in meta-training) still join a decoder:
    the bank folds them as W + delta."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    grad = _gradients(learner, passages, 1)[0] * 200
    request = AnswerRequest("Who was Shirley Temple?", gradient=grad)
    [solo] = generate_answers(learner, [request], max_new_tokens=5, return_raw=True)
    batch, _ = prepare_rows(learner, [request])
    deltas = row_deltas(grad[None], learner.step_size_vector().detach(), torch.tensor([1.0]))
    decoder = BatchDecoder(learner)
    decoder.join(["a"], batch, learner.row_adapters(deltas), [5])
    tokens: dict = {}
    while decoder:
        tokens.update(decoder.step())
    assert learner.tokenizer.decode(tokens["a"], skip_special_tokens=True) == solo


def test_a_decoder_with_its_own_slots_folds_joining_rows_in_place(tiny_learner, passages, monkeypatch):
    """With `BatchDecoder(slots=N)`, joining rows fold straight into the decoder's free slots: the
    bank is made once with N slots and never copied or regrown, mixed batches (an unadapted row, a
    base row) join it, and every row's tokens are still its tokens alone."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))
    learner = tiny_learner
    grads = [g * 200 for g in _gradients(learner, passages, 5)]
    questions = ["Who was Shirley Temple?", "What is Paris?", "Is it?", "Which one?", "Where?", "When?"]
    requests = [AnswerRequest(q, gradient=g, gamma=0.5 + i / 4) for i, (q, g) in enumerate(zip(questions, grads))]
    requests.append(AnswerRequest(questions[5]))                          # unadapted: the shared LoRA
    requests.append(AnswerRequest(questions[0], base=True))               # the base model
    lengths = [2, 7, 4, 6, 3, 5, 4]
    solo = [generate_answers(learner, [r], max_new_tokens=n, return_raw=True)[0] for r, n in zip(requests, lengths)]

    decoder = BatchDecoder(learner, slots=4)
    batch, adapters = prepare_rows(learner, requests[:3], bank=decoder.join_bank())
    bank = decoder._bank
    pointers = {name: buffer.data_ptr() for name, buffer in bank.slots.items()}
    assert adapters.bank is bank and bank.count == 0                     # folded, not yet taken
    decoder.join([0, 1, 2], batch, adapters, lengths[:3])
    assert bank.count == 3
    done: dict[int, list[int]] = {}
    waves = {1: [3, 5], 2: [4, 6]}
    step = 0
    while decoder:
        done.update(decoder.step())
        step += 1
        if step in waves:
            keys = waves[step]
            batch, adapters = prepare_rows(learner, [requests[k] for k in keys], bank=decoder.join_bank())
            decoder.join(keys, batch, adapters, [lengths[k] for k in keys])
        adapted_live = sum(1 for key in decoder.keys if requests[key].gradient is not None)
        assert decoder._bank is bank and bank.count == adapted_live
    assert sorted(done) == list(range(7))
    assert [learner.tokenizer.decode(done[i], skip_special_tokens=True) for i in range(7)] == solo
    assert {name: buffer.data_ptr() for name, buffer in bank.slots.items()} == pointers   # never regrown
    assert bank.capacity == 4


def test_a_decoder_refuses_a_prepared_batch_after_its_rows_changed(tiny_learner, passages):
    learner = tiny_learner
    grads = _gradients(learner, passages, 3)
    requests = [AnswerRequest(q, gradient=g) for q, g in zip(["Who?", "What?", "Why?"], grads)]
    decoder = BatchDecoder(learner, slots=4)
    batch, adapters = prepare_rows(learner, requests[:2], bank=decoder.join_bank())
    decoder.join([0, 1], batch, adapters, [5, 5])
    batch, adapters = prepare_rows(learner, requests[2:], bank=decoder.join_bank())   # into slot 2
    decoder.leave([0])                                                   # slot 1's row moves to slot 0
    with pytest.raises(ModelError, match="prepare the joining rows again"):
        decoder.join([2], batch, adapters, [5])
    batch, adapters = prepare_rows(learner, requests[2:], bank=decoder.join_bank())   # again: fine
    decoder.join([2], batch, adapters, [5])
    assert decoder._bank.count == 2 and decoder.keys == [1, 2]
