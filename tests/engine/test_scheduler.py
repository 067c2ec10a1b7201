"""Continuous batching on the real engine (tiny random learner, real tantivy index, real store):
requests that join a running batch mid-generation get exactly their solo answers; a withdrawn
request frees its row; shutting down fails the waiting requests and finishes the decoding ones."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from engine import Question
from engine.core import Engine, open_store
from engine.scheduler import ContinuousScheduler, SchedulerStoppedError
from models import format_passage, passage_gradients
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
