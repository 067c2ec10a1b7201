"""Continuous batching on the real engine (tiny random learner, real tantivy index, real store):
requests that join a running batch mid-generation get exactly their solo answers; a withdrawn
request frees its row; shutting down fails the waiting requests and finishes the decoding ones."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

import engine.core as core
import models.relevance as relevance
from engine import Question
from engine.composition import Composition
from engine.core import Engine, open_store
from engine.gradient_cache import GradientCache
from engine.scheduler import ContinuousScheduler, SchedulerStoppedError
from engine.types import Document, GivenPassage
from models import format_passage, passage_gradients
from models.tensor_cache import TensorCache
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever

FACTS = [
    ("Veltoria", "Veltoria is an island nation. Its capital is Marrowick."),
    ("Marrowick", "Marrowick is a port city founded by fishermen in 1412."),
    ("Dunmere", "Dunmere is a mountain village known for its cheese."),
    ("Oskel Brandt", "Oskel Brandt was a painter born in Dunmere in 1850."),
]


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    retriever = TantivyRetriever(tmp_path / "index")
    passages = [Passage(f"p{i}", title, text) for i, (title, text) in enumerate(FACTS)]
    retriever.add(passages)
    store = open_store(tmp_path / "store", tiny_learner)
    stored = passages[:2]  # the others are computed on demand, on the model thread
    store.append([p.id for p in stored], passage_gradients(tiny_learner, [format_passage(p.title, p.text)
                                                                          for p in stored]))
    engine = Engine(tiny_learner, retriever, store, missing_gradients="compute")
    yield engine
    engine.close()


@pytest.fixture()
def long_answers(monkeypatch):
    """The random tiny model soon emits some newline token (a stop token): let only end-of-text stop
    it, so a row decodes for its whole `max_new_tokens` and a test can act while it runs."""
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({tok.eos_token_id}))


def _questions() -> list[Question]:
    asks = ["What is the capital of Veltoria?", "When was Marrowick founded?", "What is Dunmere known for?",
            "Where was Oskel Brandt born?"]
    modes = [("regrad", 300.0), ("closed_book", 1.0), ("regrad", 100.0), ("rag", 1.0), ("regrad_context", 300.0),
             ("regrad", 0.0), ("rag_base", 1.0), ("closed_book_base", 1.0)]
    return [
        Question(asks[i % 4], mode=mode, gamma=gamma, top_k=1 + i % 2, max_new_tokens=3 + (5 * i) % 11)
        for i, (mode, gamma) in enumerate(modes * 2)
    ]


@pytest.mark.parametrize("prefill_budget_tokens", [None, 64, 16])
def test_rows_joining_mid_generation_get_their_solo_answers(engine, prefill_budget_tokens):
    """Newcomers prefilled in a forward of their own (None), or inside the running rows' next decode
    steps (a budget; at 16 tokens every prompt is prefilled in chunks over several steps): either way
    each request gets exactly its solo answer."""
    questions = _questions()
    solo = [engine.answer_batch([q])[0] for q in questions]
    engine.gradient_cache.clear()   # the store misses computed for the solos: computed again below
    # 12 requests, 3 rows: most join a running batch
    scheduler = ContinuousScheduler(engine, max_rows=3, prefill_budget_tokens=prefill_budget_tokens)
    scheduler.start()
    try:
        futures = [scheduler.submit(q) for q in questions[:5]]
        time.sleep(0.05)
        futures += [scheduler.submit(q) for q in questions[5:]]
        answers = [f.result(timeout=300) for f in futures]
    finally:
        scheduler.stop()
    assert [a.answer for a in answers] == [s.answer for s in solo]
    assert [[p.id for p in a.passages] for a in answers] == [[p.id for p in s.passages] for s in solo]
    assert {p.gradient for a in answers for p in a.passages} >= {"stored", "computed"}
    assert scheduler.joined_running > 0                       # rows really joined mid-generation
    assert max(a.batch_size for a in answers) == 3 and all(a.batch_size <= 3 for a in answers)
    assert all(a.timings_ms.total >= a.timings_ms.generate > 0 for a in answers)
    regrad = [a.answer for a, q in zip(answers, questions) if q.mode == "regrad" and q.gamma > 0]
    plain = [engine.answer_batch([Question(q.question, mode="closed_book", max_new_tokens=q.max_new_tokens)])[0].answer
             for q in questions if q.mode == "regrad" and q.gamma > 0]
    assert regrad != plain                                    # the adapters changed the answers


def test_token_gaps_are_reported_between_a_running_rows_tokens_not_across_idle_time(engine, long_answers):
    """One gap per decode step after a row's first token: 6 tokens make 5 gaps. The idle time between
    two requests is not a gap (no row was waiting for a token)."""
    gaps: list[float] = []
    scheduler = ContinuousScheduler(engine, max_rows=2, on_token_gap=gaps.append)
    scheduler.start()
    try:
        scheduler.submit(Question("What is the capital of Veltoria?", max_new_tokens=6)).result(timeout=120)
        assert len(gaps) == 5
        time.sleep(0.5)                                         # idle: nothing decodes
        scheduler.submit(Question("Where was Oskel Brandt born?", max_new_tokens=4)).result(timeout=120)
    finally:
        scheduler.stop()
    assert len(gaps) == 5 + 3
    assert all(0 < gap < 0.5 for gap in gaps)


def test_a_withdrawn_request_frees_its_row(engine, long_answers):
    scheduler = ContinuousScheduler(engine, max_rows=1)
    scheduler.start()
    try:
        long = scheduler.submit(Question("What is the capital of Veltoria?", max_new_tokens=4000))
        deadline = time.monotonic() + 60
        while scheduler.live == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert long.cancel()                                   # the client left while decoding
        short = scheduler.submit(Question("Where was Oskel Brandt born?", mode="closed_book", max_new_tokens=2))
        answer = short.result(timeout=60)                      # the only row was freed for it
    finally:
        scheduler.stop()
    assert answer.answer == engine.answer_batch([Question("Where was Oskel Brandt born?", mode="closed_book",
                                                          max_new_tokens=2)])[0].answer
    with pytest.raises(CancelledError):
        long.result()


def test_stop_fails_the_waiting_and_finishes_the_decoding(engine, long_answers):
    scheduler = ContinuousScheduler(engine, max_rows=1)
    scheduler.start()
    decoding = scheduler.submit(Question("What is Dunmere known for?", mode="closed_book", max_new_tokens=30))
    waiting = [scheduler.submit(Question("When was Marrowick founded?", mode="closed_book")) for _ in range(3)]
    deadline = time.monotonic() + 60
    while scheduler.live == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    scheduler.stop()
    assert decoding.result(timeout=60).answer is not None
    for future in waiting:
        with pytest.raises(SchedulerStoppedError):
            future.result(timeout=60)
    with pytest.raises(SchedulerStoppedError):
        scheduler.submit(Question("Too late?"))


def test_exclusive_work_runs_on_the_model_thread_between_steps(engine):
    scheduler = ContinuousScheduler(engine, max_rows=2)
    scheduler.start()
    try:
        decoding = scheduler.submit(Question("What is Dunmere known for?", mode="closed_book", max_new_tokens=20))
        name = scheduler.run_exclusive(lambda: threading.current_thread().name).result(timeout=60)
        decoding.result(timeout=60)
    finally:
        scheduler.stop()
    assert name == "regrad-model"


def test_newcomers_too_few_for_the_free_rows_wait_for_company(engine, long_answers):
    """While a row decodes, one newcomer for two free rows waits (up to join_wait_ms) and joins with
    the next one: one prefill for both."""
    scheduler = ContinuousScheduler(engine, max_rows=3, join_wait_ms=60_000)
    scheduler.start()
    try:
        running = scheduler.submit(Question("What is the capital of Veltoria?", mode="closed_book",
                                            max_new_tokens=4000))
        deadline = time.monotonic() + 60
        while scheduler.live == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = scheduler.submit(Question("What is Dunmere known for?", mode="closed_book", max_new_tokens=3))
        time.sleep(0.5)
        assert scheduler.live == 1 and scheduler.waiting == 1 and not first.done()   # held for company
        second = scheduler.submit(Question("When was Marrowick founded?", mode="closed_book", max_new_tokens=3))
        answers = [first.result(timeout=60), second.result(timeout=60)]
        running.cancel()
    finally:
        scheduler.stop()
    assert [a.batch_size for a in answers] == [3, 3]          # both joined the running row in one step


def _likelihood_newcomer() -> Question:
    return Question("Was Oskel Brandt born in Dunmere, near Marrowick?", top_k=3, gamma=300.0, max_new_tokens=4,
                    composition=Composition("likelihood", 0.05))


def _decoding(scheduler: ContinuousScheduler, events: list[str]):
    """A closed_book row that decodes on (its tokens logged as events) until cancelled."""
    running = scheduler.submit(Question("What is the capital of Veltoria?", mode="closed_book", max_new_tokens=4000),
                               on_token=lambda token: events.append("token"))
    deadline = time.monotonic() + 60
    while scheduler.live == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return running


def _answer_beside_a_decoding_row(engine, question: Question, budget: int, events: list[str] | None = None,
                                  timeout: float = 120):
    """A scheduler at this prefill budget, a row decoding (`_decoding`), the question asked: its answer."""
    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=budget)
    scheduler.start()
    try:
        running = _decoding(scheduler, [] if events is None else events)
        answer = scheduler.submit(question).result(timeout=timeout)
        running.cancel()
    finally:
        scheduler.stop()
    return answer


def _spy_warming(engine, monkeypatch, events: list[str], slices: list[tuple[int, int]] | None = None) -> None:
    """Log each slice of work ahead as a "warm" event (scoring prompts and own passages' gradients
    alike), and each slice of scoring prompts' (prompts, tokens) in `slices`."""
    warm_prompts, warm_gradients = engine.warm_passage_prompts, engine.warm_gradients

    def prompts_spy(prompts: dict[str, list[int]]) -> None:
        events.append("warm")
        if slices is not None:
            slices.append((len(prompts), sum(map(len, prompts.values()))))
        warm_prompts(prompts)

    def gradients_spy(texts: dict[str, str]) -> None:
        events.append("warm")
        warm_gradients(texts)

    monkeypatch.setattr(engine, "warm_passage_prompts", prompts_spy)
    monkeypatch.setattr(engine, "warm_gradients", gradients_spy)


def test_a_likelihood_newcomer_is_scored_a_budget_at_a_time_between_the_running_rows_steps(
        engine, long_answers, monkeypatch):
    """Its three passages' scoring prompts are prefilled into the relevance cache one slice per step
    (at most the budget's tokens, or one prompt), each slice followed by a decode step of the running
    row; it joins once they are warm, so its join runs the question pass alone, and its answer is its
    solo answer (scored whole at the join)."""
    question = _likelihood_newcomer()
    [solo] = Engine(engine.learner, engine.retriever, engine.store).answer_batch([question])
    prefix_widths: list[int] = []
    prefix_pass = relevance._prefix_pass
    monkeypatch.setattr(relevance, "_prefix_pass",
                        lambda learner, prefixes: prefix_widths.append(len(prefixes)) or prefix_pass(learner, prefixes))
    events: list[str] = []
    slices: list[tuple[int, int]] = []
    _spy_warming(engine, monkeypatch, events, slices)
    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=16)
    scheduler.start()
    try:
        running = _decoding(scheduler, events)
        hits = engine.relevance_cache.hits
        answer = scheduler.submit(question).result(timeout=120)
        running.cancel()
    finally:
        scheduler.stop()
    assert answer.answer == solo.answer
    assert [p.weight for p in answer.passages] == pytest.approx([p.weight for p in solo.passages], rel=1e-4)
    assert [n for n, _ in slices] == [1, 1, 1]               # one prompt (> 16 tokens) a slice
    assert len(prefix_widths) == 3                           # and no prefix pass at the join
    assert engine.relevance_cache.hits == hits + 3           # the join read all three from the cache
    warms = [i for i, event in enumerate(events) if event == "warm"]
    assert all("token" in events[a:b] for a, b in zip(warms, warms[1:]))   # a decode step between two slices


@pytest.mark.parametrize("fits", ["all", "all but two prompts"])
def test_a_newcomer_joins_once_what_is_left_of_its_work_fits_the_budget(engine, long_answers, monkeypatch, fits):
    """All of its work within the budget: no slice, its join does it. A budget one token short of its
    work: one slice does the first two prompts, and its join the third. (Every passage is stored: its
    work is the scoring alone.)"""
    indexed = engine.retriever.get([f"p{i}" for i in range(len(FACTS))])
    engine.add_documents([Document(p.text, p.title, p.id) for p in indexed])   # their gradients stored
    question = _likelihood_newcomer()
    [row] = engine.begin([question])
    lengths = [len(ids) for ids in engine.cold_passage_prompts(row).values()]
    events: list[str] = []
    slices: list[tuple[int, int]] = []
    _spy_warming(engine, monkeypatch, events, slices)
    budget = sum(lengths) if fits == "all" else sum(lengths) - 1
    answer = _answer_beside_a_decoding_row(engine, question, budget, events=events)
    assert slices == ([] if fits == "all" else [(2, lengths[0] + lengths[1])])
    assert answer.composition == "likelihood:0.05" and len(engine.relevance_cache) == 3


@pytest.mark.parametrize("case", ["no budget", "nothing decoding", "cache off", "cache of one prompt"])
def test_where_nothing_can_stall_or_nothing_can_be_kept_the_newcomer_is_scored_at_its_join(
        engine, long_answers, monkeypatch, case):
    """No budget: scored whole at the join, as before. Nothing decoding: no stream to stall, so it joins
    at once. No cache: nothing warmed could be kept. A cache that holds one prompt: each slice evicts
    the last; warmed once, the request joins and is scored there (no livelock)."""
    question = _likelihood_newcomer()
    [solo] = Engine(engine.learner, engine.retriever, engine.store).answer_batch([question])
    if case == "cache off":
        monkeypatch.setattr(engine, "relevance_cache", TensorCache(0))
    if case == "cache of one prompt":
        [row] = engine.begin([question])
        prompts = engine.cold_passage_prompts(row)
        sizes = [entry.nbytes for entry in relevance._prefix_passes(engine.learner, prompts).values()]
        monkeypatch.setattr(engine, "relevance_cache", TensorCache(max(sizes) + 1))
    events: list[str] = []
    slices: list[tuple[int, int]] = []
    _spy_warming(engine, monkeypatch, events, slices)
    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=None if case == "no budget" else 16)
    scheduler.start()
    try:
        running = None if case == "nothing decoding" else _decoding(scheduler, events)
        answer = scheduler.submit(question).result(timeout=120)
        if running is not None:
            running.cancel()
    finally:
        scheduler.stop()
    assert answer.answer == solo.answer
    assert len(slices) == (3 if case == "cache of one prompt" else 0)


@pytest.mark.integration
def test_real_model_a_newcomers_work_is_done_between_steps_and_it_answers_as_alone(
        real_learner, shared_data, tmp_path, monkeypatch):
    """The bundled model, three HotpotQA paragraphs of the caller's own, weighed by `likelihood`: the
    newcomer joins a decoding row at a 128-token budget. Its scoring prompts (101-135 tokens) and its
    passages' gradients (3x their tokens) are done ahead one item a slice, a decode step of the
    running row after each; its join reads them from the caches (no backward); its answer and
    weights are those it gets alone, and each passage's gradient says `computed`."""
    import itertools

    from retrieval import read_corpus

    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add(list(itertools.islice(read_corpus(path), 30)))
    asked = "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"
    given = [GivenPassage(p.text, p.title) for p in retriever.search(asked, k=3)]
    question = Question(asked, passages=given, max_new_tokens=6, composition=Composition("likelihood", 0.2))
    engine = Engine(real_learner, retriever, None, missing_gradients="compute")
    [solo] = Engine(real_learner, retriever, None, missing_gradients="compute").answer_batch([question])
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: frozenset({-1}))   # the running row runs on
    events: list[str] = []
    slices: list[tuple[int, int]] = []
    _spy_warming(engine, monkeypatch, events, slices)
    backwards = _count_backwards(monkeypatch)
    try:
        answer = _answer_beside_a_decoding_row(engine, question, 128, events=events, timeout=300)
    finally:
        retriever.close()
    assert [n for n, _ in slices] == [1, 1, 1] and backwards == [1, 1, 1]   # one item a slice, none at the join
    warms = [i for i, event in enumerate(events) if event == "warm"]
    assert len(warms) == 6 and all("token" in events[a:b] for a, b in zip(warms, warms[1:]))
    assert answer.answer == solo.answer
    assert [p.weight for p in answer.passages] == pytest.approx([p.weight for p in solo.passages], rel=1e-3)
    assert [p.gradient for p in answer.passages] == ["computed"] * 3


GIVEN = [GivenPassage(text, title) for title, text in FACTS[:3]]


def _given_newcomer(**fields) -> Question:
    return Question("Where was Oskel Brandt born?", passages=GIVEN, gamma=300.0, max_new_tokens=4, **fields)


def _count_backwards(monkeypatch) -> list[int]:
    """The passages of each gradient computation the engine runs."""
    backwards: list[int] = []
    compute = core.passage_gradients

    def spy(learner, texts, **kwargs):
        backwards.append(len(texts))
        return compute(learner, texts, **kwargs)

    monkeypatch.setattr(core, "passage_gradients", spy)
    return backwards


@pytest.mark.parametrize("kind", ["own passages", "store misses"])
def test_a_newcomers_gradients_are_computed_a_budget_at_a_time_between_steps(engine, long_answers, monkeypatch, kind):
    """A request joining a decoding row with gradients to compute: its own three passages, or a
    retrieved top 4 that holds two passages the store lacks. They are computed into the gradient cache
    one passage a slice (each costs 3x its tokens, over the 16-token budget), a decode step after each;
    its join runs no backward; the answer is its solo answer, each computed passage says `computed`
    (for it, ahead of its join) and the others `stored`. Asked again: `cached`, nothing computed (kept
    in memory; the store is not written)."""
    question = _given_newcomer() if kind == "own passages" else Question(
        "Was Oskel Brandt born in Dunmere, near Marrowick in Veltoria?", top_k=4, gamma=300.0, max_new_tokens=4,
        composition=Composition("softmax", 0.4))
    [solo] = Engine(engine.learner, engine.retriever, engine.store).answer_batch([question])
    sources = [p.gradient for p in solo.passages]
    assert sorted(sources) == (["computed"] * 3 if kind == "own passages" else ["computed"] * 2 + ["stored"] * 2)
    backwards = _count_backwards(monkeypatch)
    events: list[str] = []
    _spy_warming(engine, monkeypatch, events)
    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=16)
    scheduler.start()
    try:
        running = _decoding(scheduler, events)
        answer = scheduler.submit(question).result(timeout=120)
        again = scheduler.submit(question).result(timeout=120)
        running.cancel()
    finally:
        scheduler.stop()
    computed = sources.count("computed")
    assert backwards == [1] * computed                         # one passage a slice, none at the join
    warms = [i for i, event in enumerate(events) if event == "warm"]
    assert len(warms) == computed and all("token" in events[a:b] for a, b in zip(warms, warms[1:]))
    assert answer.answer == solo.answer == again.answer
    assert [p.gradient for p in answer.passages] == sources
    assert [p.gradient for p in again.passages] == ["cached" if g == "computed" else g for g in sources]
    assert sorted(engine.store.ids()) == ["p0", "p1"]


def test_own_passages_are_computed_at_the_join_where_the_cache_cannot_hold_them_all(engine, long_answers, monkeypatch):
    """Room for two of the three gradients: worked ahead, the first would be evicted before the join,
    so all three are computed in one backward at the join, as before."""
    dim = engine.learner.layout.dim
    monkeypatch.setattr(engine, "gradient_cache", GradientCache(max_bytes=2 * dim * 4 * 2 - 1))
    assert engine.cold_gradients(engine.begin([_given_newcomer()])[0]) == {}
    backwards = _count_backwards(monkeypatch)
    answer = _answer_beside_a_decoding_row(engine, _given_newcomer(), 64)
    assert backwards == [3] and [p.gradient for p in answer.passages] == ["computed"] * 3


def test_work_ahead_takes_what_is_left_of_the_budget_and_is_put_off_once_not_twice(engine):
    """Model-thread logic, driven directly: a slice gets what the joins and the next step's prefill
    leave of the budget; when its next item does not fit it is put off once, then takes one item
    whatever its cost (joins every step would starve it); a withdrawn request's work is not done,
    and it becomes ready so that its join drops it."""
    from concurrent.futures import Future

    from engine.scheduler import _Job
    from engine.work_ahead import WorkAhead

    [row] = engine.begin([_likelihood_newcomer()])
    smallest = min(len(ids) for ids in engine.cold_passage_prompts(row).values())
    budget = smallest + 5
    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=budget)
    scheduler._ahead = WorkAhead(engine, budget)
    calls: list[tuple[int, bool, int]] = []
    run_slice = scheduler._ahead.run_slice

    def spy(rows, budget_tokens, at_least_one):
        before = len(job.done_ahead)
        ran = run_slice(rows, budget_tokens, at_least_one=at_least_one)
        calls.append((budget_tokens, at_least_one, len(job.done_ahead) - before))
        return ran

    scheduler._ahead.run_slice = spy
    job = _Job(0, _likelihood_newcomer(), Future(), 0.0, row=row)
    scheduler._staged.append(job)
    scheduler._work_ahead(spent=budget)
    assert calls[-1] == (0, False, 0)                     # nothing fits: put off
    scheduler._work_ahead(spent=budget)
    assert calls[-1] == (0, True, 1)                      # not twice in a row: one item
    scheduler._work_ahead(spent=0)
    assert calls[-1][:2] == (budget, False)
    job.future.cancel()
    scheduler._work_ahead(spent=0)
    assert len(calls) == 3 and job.ready                  # withdrawn: nothing done for it


def test_while_rows_decode_a_newcomer_joins_with_work_left_only_within_the_budget_and_once_read(engine):
    """Model-thread logic, driven directly: with a row decoding, a newcomer whose work was not read yet
    waits; one with more work left than the budget waits; one whose work left fits joins, and the
    slice after it gets what its join leaves of the budget."""
    from concurrent.futures import Future

    from engine.scheduler import _Job, _work_left
    from engine.work_ahead import WorkAhead

    scheduler = ContinuousScheduler(engine, max_rows=2, prefill_budget_tokens=100)
    scheduler._ahead = WorkAhead(engine, 100)
    scheduler._live, scheduler._running = {"decoding": object()}, True     # a row decodes; not stopping
    [row] = engine.begin([_likelihood_newcomer()])
    job = _Job(0, _likelihood_newcomer(), Future(), 0.0, row=row)
    scheduler._staged.append(job)
    assert scheduler._admitted() == []                        # its work not read yet
    job.left_tokens = 101
    assert scheduler._admitted() == []                        # more than the budget left
    job.left_tokens = 60
    assert scheduler._admitted() == [job] and _work_left([job]) == 60
    assert not scheduler._staged


def test_each_row_decodes_with_its_own_stop_bias_or_the_engines(engine, long_answers):
    """A request's `stop_bias` (else the engine's default) rides with its row through continuous batching:
    each request gets its solo answer, and a biased row ends sooner than it does unbiased."""
    import dataclasses

    engine.stop_bias = 0.0
    questions = [dataclasses.replace(q, stop_bias=20.0 if i % 3 == 0 else None, max_new_tokens=10)
                 for i, q in enumerate(_questions()[:9])]
    solo = [engine.answer_batch([q])[0].answer for q in questions]
    unbiased = [engine.answer_batch([dataclasses.replace(q, stop_bias=None)])[0].answer for q in questions]
    biased = range(0, 9, 3)
    assert all(unbiased[i].startswith(solo[i]) for i in biased)                # an answer cut short
    assert any(len(solo[i]) < len(unbiased[i]) for i in biased)
    assert [solo[i] for i in range(9) if i % 3] == [unbiased[i] for i in range(9) if i % 3]
    scheduler = ContinuousScheduler(engine, max_rows=3, prefill_budget_tokens=16)
    scheduler.start()
    try:
        answers = [f.result(timeout=120).answer for f in [scheduler.submit(q) for q in questions]]
    finally:
        scheduler.stop()
    assert answers == solo
    engine.stop_bias = 20.0   # the engine's default now biases every row that does not say
    assert [engine.answer_batch([questions[i]])[0].answer for i in (1, 2)] == [
        engine.answer_batch([dataclasses.replace(questions[i], stop_bias=20.0)])[0].answer for i in (1, 2)]
    assert engine.answer_batch([dataclasses.replace(questions[1], stop_bias=0.0)])[0].answer == unbiased[1]


def test_beam_requests_are_searched_beside_the_running_rows_and_stream_their_answer(engine, long_answers):
    """Requests with `beams` > 1 (their own, or the engine's default) join the running beam searches beside the
    greedy batch (`models.beam.BeamBatch`, a step of each per loop) and get the engine's own beam answer; greedy
    rows decoding beside them get their solo answers; a streamed beam request receives its answer's tokens,
    then an end-of-turn token."""
    import dataclasses

    from models.decoding import end_of_turn_id

    questions = [dataclasses.replace(q, beams=3 if i % 3 == 0 else None, max_new_tokens=6)
                 for i, q in enumerate(_questions()[:7])]
    solo = [engine.answer_batch([q])[0].answer for q in questions]
    greedy = [engine.answer_batch([dataclasses.replace(q, beams=1)])[0].answer for q in questions]
    assert [solo[i] for i in range(7) if i % 3] == [greedy[i] for i in range(7) if i % 3]
    assert any(solo[i] != greedy[i] for i in range(0, 7, 3))   # the search changes an answer
    streamed: list[int] = []
    scheduler = ContinuousScheduler(engine, max_rows=3, prefill_budget_tokens=16)
    scheduler.start()
    try:
        futures = [scheduler.submit(q, on_token=streamed.append if i == 0 else None) for i, q in enumerate(questions)]
        answers = [f.result(timeout=120).answer for f in futures]
    finally:
        scheduler.stop()
    assert answers == solo
    tok = engine.learner.tokenizer
    assert streamed[-1] == end_of_turn_id(tok) and tok.decode(streamed[:-1], skip_special_tokens=True).strip() \
        == solo[0].strip()
    engine.beams = 3   # the engine's default now searches every request that does not say
    assert engine.answer_batch([questions[1]])[0].answer == engine.answer_batch(
        [dataclasses.replace(questions[1], beams=3)])[0].answer
    engine.beams = 1
    with pytest.raises(ValueError, match="stop_bias"):
        dataclasses.replace(questions[0], stop_bias=1.0)


def test_the_served_beam_width_is_the_configs_else_the_learners_else_greedy(tiny_learner):
    """`Engine.from_config`'s width: the config's when set; else the learner's learner.json `beams`; greedy
    when neither says, or when the config asks for a stop bias (which beam search does not take)."""
    from engine.config import EngineConfig
    from engine.core import _served_beams

    assert _served_beams(EngineConfig(), tiny_learner) == 1
    tiny_learner.beams = 4
    assert _served_beams(EngineConfig(), tiny_learner) == 4
    assert _served_beams(EngineConfig(beams=2), tiny_learner) == 2
    assert _served_beams(EngineConfig(stop_bias=1.0), tiny_learner) == 1
    with pytest.raises(ValueError, match="stop_bias"):
        Engine(tiny_learner, None, beams=4, stop_bias=1.0)
