"""Passages handed in with the question (instead of retrieval), the in-memory gradient cache, and
per-token streaming from the continuous scheduler. Tiny random learner, real tantivy index and store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import Question
from engine.core import Engine, open_store
from engine.gradient_cache import GradientCache
from engine.scheduler import ContinuousScheduler
from engine.types import GivenPassage
from models.generate import normalize_answer_type
from retrieval.passage import Passage, passage_id
from retrieval.tantivy_backend import TantivyRetriever

GIVEN = (
    GivenPassage("Veltoria is an island nation. Its capital is Marrowick.", "Veltoria", id="mine-1", score=2.5),
    GivenPassage("Marrowick is a port city founded by fishermen in 1412.", "Marrowick"),
)


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add([Passage("corpus-1", "Dunmere", "Dunmere is a mountain village known for its cheese.")])
    engine = Engine(tiny_learner, retriever, open_store(tmp_path / "store", tiny_learner))
    yield engine
    engine.close()


def test_given_passages_replace_retrieval_and_are_cached_not_stored(engine):
    ask = Question("What is the capital of Veltoria?", top_k=1, passages=GIVEN, max_new_tokens=3)
    [first] = engine.answer_batch([ask])
    hashes = [passage_id(g.title, g.text) for g in GIVEN]
    assert [p.id for p in first.passages] == ["mine-1", hashes[1]]      # the caller's id, else the hash
    assert [p.score for p in first.passages] == [2.5, 0.0]
    assert first.passage_texts == [g.text for g in GIVEN]
    assert [p.gradient for p in first.passages] == ["computed", "computed"]
    assert not any(engine.store.contains(h) for h in hashes)             # not written back unasked
    assert all(h in engine.gradient_cache for h in hashes)
    [second] = engine.answer_batch([ask])
    assert [p.gradient for p in second.passages] == ["cached", "cached"]
    assert second.answer == first.answer                                 # the same gradients


def test_write_back_when_asked_then_stored(engine):
    engine.gradient_cache = GradientCache(max_bytes=0)                   # cache off: the store answers
    [answer] = engine.answer_batch([Question("Capital?", passages=GIVEN, write_back=True, max_new_tokens=2)])
    assert [p.gradient for p in answer.passages] == ["computed", "computed"]
    assert all(engine.store.contains(passage_id(g.title, g.text)) for g in GIVEN)
    [again] = engine.answer_batch([Question("Capital?", passages=GIVEN[::-1], max_new_tokens=2)])
    assert [p.gradient for p in again.passages] == ["stored", "stored"]


def test_given_passages_go_in_the_prompt_and_closed_book_ignores_them(engine):
    rag, closed = engine.answer_batch([Question("Capital?", mode="rag", passages=GIVEN, max_new_tokens=2),
                                       Question("Capital?", mode="closed_book", passages=GIVEN, max_new_tokens=2)])
    assert [p.gradient for p in rag.passages] == [None, None] and len(rag.passages) == 2
    assert closed.passages == []


def test_too_many_given_passages_are_refused():
    with pytest.raises(ValueError, match="passages must hold 1..20"):
        Question("q", passages=GIVEN * 11)


def test_cache_evicts_least_recently_used_by_bytes():
    cache = GradientCache(max_bytes=3 * 4 * 10)                          # three fp32 vectors of 10
    for key in "abc":
        cache.put(key, torch.zeros(10))
    cache.get("a")
    cache.put("d", torch.zeros(10))
    assert sorted(cache._entries) == ["a", "c", "d"] and cache.bytes == 120


def test_scheduler_streams_each_rows_tokens_as_decoded(engine):
    scheduler = ContinuousScheduler(engine, max_rows=4)
    scheduler.start()
    try:
        streams: dict[int, list[int]] = {0: [], 1: []}
        questions = [Question("What is the capital of Veltoria?", passages=GIVEN, max_new_tokens=6),
                     Question("Where is Dunmere?", mode="closed_book", max_new_tokens=4)]
        futures = [scheduler.submit(q, on_token=streams[i].append) for i, q in enumerate(questions)]
        answers = [f.result(timeout=120) for f in futures]
    finally:
        scheduler.stop()
    tokenizer = engine.learner.tokenizer
    for i, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        assert 1 <= len(streams[i]) <= question.max_new_tokens
        text = tokenizer.decode(streams[i], skip_special_tokens=True)
        assert normalize_answer_type(text, question.answer_type) == answer.answer
