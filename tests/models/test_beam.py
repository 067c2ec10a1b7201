"""Beam search over row-adapted answers (`models.beam`): the KV-cached search equals a search written out
with a full forward per step, width 1 is greedy, and rows of one batch each keep their own adapter and width."""

import pytest
import torch

from models import AnswerRequest, summed_gradient
from models.beam import BeamBatch, polar_token_ids
from models.decoding import stop_token_ids
from models.generate import beam_answers, generate_answers, next_token_logits, prepare_beam_rows, prepare_rows

TWO_STOPS = "models.decoding.stop_token_ids"


def _requests(learner, passages) -> list[AnswerRequest]:
    g = summed_gradient(learner, passages[:2]) * 200   # strong enough to change the answers
    h = summed_gradient(learner, passages[3:4]) * 200
    return [AnswerRequest("Who was Shirley Temple?", gradient=g), AnswerRequest("What is Paris?"),
            AnswerRequest("Where is it?", base=True), AnswerRequest("What is Paris?", gradient=h, gamma=0.5),
            AnswerRequest("Who was Shirley Temple?", gradient=g, context=[("Paris", "Paris is in France.")])]


def _reference(learner, request: AnswerRequest, width: int, limit: int, stops, polar=frozenset()) -> list[int]:
    """Beam search written out: one request, a full forward over prompt + each beam per step, no cache;
    a likeliest first token in `polar` is the only first token."""
    batch, _ = prepare_rows(learner, [request])
    prompt = batch["input_ids"][0].tolist()
    model = learner.model.get_base_model()
    beams, finished = [([], 0.0)], []
    for step in range(limit):
        ids = torch.tensor([prompt + tokens for tokens, _ in beams])
        with torch.no_grad(), learner.using_rows(prepare_rows(learner, [request] * len(beams))[1]):
            logp = torch.log_softmax(model(input_ids=ids).logits[:, -1].float(), -1)
        if step == 0 and int(logp[0].argmax()) in polar:
            logp[0, torch.arange(logp.shape[-1]) != logp[0].argmax()] = float("-inf")
        total = torch.tensor([score for _, score in beams])[:, None] + logp
        order = total.flatten().argsort(descending=True)[: width * (len(stops) + 1)].tolist()
        live = []
        for index in order:
            b, v = divmod(index, logp.shape[-1])
            if len(live) == width:
                break
            if v in stops:
                finished.append((float(total[b, v]), beams[b][0]))
            else:
                live.append((beams[b][0] + [v], float(total[b, v])))
        if finished and (max(s for s, _ in finished) >= live[0][1] or step + 1 == limit):
            return max(finished, key=lambda f: f[0])[1]
        if step + 1 == limit:
            return live[0][0]
        beams = live
    return []


@pytest.fixture()
def few_stops(monkeypatch, tiny_learner):
    """A random model's answers end (and run on) by chance: two stop tokens among its likeliest."""
    tok = tiny_learner.tokenizer
    stops = frozenset({tok.eos_token_id, tok.convert_tokens_to_ids(",")})
    monkeypatch.setattr(TWO_STOPS, lambda t: stops)
    return stops


@pytest.fixture()
def no_polar(monkeypatch):
    """No first token counts as a yes or a no (a random model's likeliest one might)."""
    monkeypatch.setattr("models.beam.polar_token_ids", lambda t: frozenset())


@pytest.mark.parametrize("width", [2, 3])
def test_the_cached_search_is_the_search_written_out(tiny_learner, passages, few_stops, no_polar, width):
    requests = _requests(tiny_learner, passages)
    limit = 5
    found = beam_answers(tiny_learner, requests, width, [limit] * len(requests))
    assert found == [_reference(tiny_learner, r, width, limit, few_stops) for r in requests]


def test_a_polar_answer_keeps_greedys_first_token(tiny_learner, passages, few_stops, monkeypatch):
    """Where greedy's first token is a yes or a no, the search keeps it and searches what follows; a
    search free to choose starts some of these answers with another token."""
    requests = _requests(tiny_learner, passages)
    firsts = next_token_logits(tiny_learner, requests).argmax(-1).tolist()
    monkeypatch.setattr("models.beam.polar_token_ids", lambda t: frozenset())
    free = beam_answers(tiny_learner, requests, 3, [5] * len(requests))
    assert any(answer[:1] != [first] for answer, first in zip(free, firsts))
    polar = frozenset(firsts[:3])   # the first three requests' first tokens count as polar
    monkeypatch.setattr("models.beam.polar_token_ids", lambda t: polar)
    kept = beam_answers(tiny_learner, requests, 3, [5] * len(requests))
    assert kept == [_reference(tiny_learner, r, 3, 5, few_stops, polar) for r in requests]
    assert all(answer[:1] == [first] for answer, first in zip(kept, firsts) if first in polar)


def test_the_real_tokenizer_s_polar_tokens(tiny_learner):
    tok = tiny_learner.tokenizer
    words = {tok.decode([i]).strip() for i in polar_token_ids(tok)}
    assert {"Yes", "No", "yes", "no"} <= words <= {"Yes", "No", "yes", "no", "YES", "NO"}


def test_one_beam_is_greedy(tiny_learner, passages, few_stops):
    requests = _requests(tiny_learner, passages)
    tok = tiny_learner.tokenizer
    greedy = generate_answers(tiny_learner, requests, max_new_tokens=6, return_raw=True)
    one = beam_answers(tiny_learner, requests, 1, [6] * len(requests))
    assert [tok.decode(t, skip_special_tokens=True) for t in one] == greedy
    assert beam_answers(tiny_learner, requests, 4, [6] * len(requests)) != one   # a search changes answers


def test_each_row_of_a_batch_decodes_with_its_own_width(tiny_learner, passages, few_stops):
    """`generate_answers` with a width per row: greedy rows are the all-greedy batch's, the others each
    width's own search, whatever else is in the batch."""
    requests = _requests(tiny_learner, passages)
    tok = tiny_learner.tokenizer
    greedy = generate_answers(tiny_learner, requests, max_new_tokens=6, return_raw=True)
    widths = [3, 1, 2, 1, 3]
    mixed = generate_answers(tiny_learner, requests, max_new_tokens=6, return_raw=True, beams=widths)
    for i, width in enumerate(widths):
        alone = beam_answers(tiny_learner, [requests[i]], width, [6])[0]
        assert mixed[i] == (greedy[i] if width == 1 else tok.decode(alone, skip_special_tokens=True))
    with pytest.raises(ValueError, match="one max_new_tokens"):
        generate_answers(tiny_learner, requests, beams=[1, 2])
    with pytest.raises(ValueError, match="width"):
        beam_answers(tiny_learner, requests, 0, [6] * len(requests))


def test_the_real_stop_set_ends_beams_and_limits_hold(tiny_learner, passages):
    """With the tokenizer's real stop set (newline tokens too), no answer holds a stop token and none is
    longer than its limit."""
    requests = _requests(tiny_learner, passages)
    stops = stop_token_ids(tiny_learner.tokenizer)
    limits = [1, 3, 8, 4, 2]
    found = beam_answers(tiny_learner, requests, 3, limits)
    assert len(found) == len(requests)
    assert all(len(t) <= n and not set(t) & stops for t, n in zip(found, limits))


def test_requests_join_and_leave_a_running_search(tiny_learner, passages, few_stops):
    """Continuous batching for beams (`BeamBatch`): requests that join a search already running, with their
    own widths, get the answers they get alone; a request that leaves takes its rows and nothing else."""
    requests = _requests(tiny_learner, passages)
    widths = [3, 2, 3, 2, 3]
    alone = [beam_answers(tiny_learner, [r], w, [6])[0] for r, w in zip(requests, widths)]
    beams = BeamBatch(tiny_learner)

    def join(keys):
        chosen = [widths[k] for k in keys]
        beams.join(keys, *prepare_beam_rows(tiny_learner, [requests[k] for k in keys], chosen), chosen, [6] * len(keys))

    found = {}
    join([0, 1])
    found.update(beams.step())
    join([2])
    found.update(beams.step())
    assert 1 not in found                                    # still searching when its client leaves
    beams.leave([1])
    join([3, 4])
    while beams:
        found.update(beams.step())
    assert set(found) == {0, 2, 3, 4}
    assert all(found[k] == alone[k] for k in found)
    assert len(beams._rows) == 0 and not beams.keys
    with pytest.raises(ValueError, match="one key"):
        beams.join([0], *prepare_rows(tiny_learner, requests[:2]), None, [2, 2], [6, 6])
