"""A newcomer's work ahead (engine/work_ahead.py), on the real engine with a tiny random learner: what
is left, what one slice does within its budget, and what it records."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Question
from engine.composition import Composition
from engine.core import Engine, open_store
from engine.types import Document, GivenPassage
from engine.work_ahead import WorkAhead
from models.gradients import passage_token_counts
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever

FACTS = [
    ("Veltoria", "Veltoria is an island nation. Its capital is Marrowick."),
    ("Marrowick", "Marrowick is a port city founded by fishermen in 1412."),
    ("Dunmere", "Dunmere is a mountain village known for its cheese."),
]


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add([Passage(f"p{i}", title, text) for i, (title, text) in enumerate(FACTS)])
    engine = Engine(tiny_learner, retriever, open_store(tmp_path / "store", tiny_learner))
    yield engine
    engine.close()


def _row(engine, **fields):
    question = Question("Is Marrowick in Veltoria, near Dunmere?", passages=tuple(GivenPassage(t, n) for n, t in FACTS),
                        composition=Composition("likelihood", 0.2), **fields)
    [row] = engine.begin([question])
    return row


def test_a_slice_does_one_item_at_least_and_records_it_for_its_row(engine):
    """Three scoring prompts and three gradients: at budget 1 each slice does exactly one item, the
    oldest row's first; after six slices nothing is left, and the caches hold the work."""
    ahead, row, done = WorkAhead(engine, budget_tokens=1), _row(engine), set()
    assert len(engine.cold_passage_prompts(row)) == 3 and len(engine.cold_gradients(row)) == 3
    for n in range(1, 7):
        assert ahead.left(row, done)
        ahead.run_slice([(row, done)])
        assert len(done) == n
    assert not ahead.left(row, done)
    assert engine.cold_passage_prompts(row) == {} and engine.cold_gradients(row) == {}
    assert len(engine.relevance_cache) == 3 and len(engine.gradient_cache) == 3


def test_a_slice_fills_its_budget_across_rows_and_shares_their_common_work(engine):
    """A budget for everything: one slice does both rows' work; the passages they share run once and
    count as done for each."""
    ahead = WorkAhead(engine, budget_tokens=100_000)
    first, second = _row(engine), _row(engine, mode="regrad_context")
    done_first, done_second = set(), set()
    warmed: list[int] = []
    warm = engine.warm_passage_prompts
    engine.warm_passage_prompts = lambda prompts: warmed.append(len(prompts)) or warm(prompts)
    ahead.run_slice([(first, done_first), (second, done_second)])
    assert warmed == [3] and done_first == done_second and len(done_first) == 6
    assert not ahead.left(first, done_first) and not ahead.left(second, done_second)


def test_work_done_once_and_evicted_is_not_left_and_rows_without_work_have_none(engine):
    ahead, row, done = WorkAhead(engine, budget_tokens=100_000), _row(engine), set()
    ahead.run_slice([(row, done)])
    engine.relevance_cache.clear()
    engine.gradient_cache.clear()
    assert engine.cold_passage_prompts(row) and not ahead.left(row, done)   # the join does it
    assert not ahead.left(_row(engine, mode="closed_book"), set())
    engine.add_documents([Document(p.text, p.title, p.id) for p in engine.retriever.get(["p0", "p1", "p2"])])
    [retrieved] = engine.begin([Question("Is Marrowick in Veltoria?", composition=Composition("softmax", 0.4))])
    assert not ahead.left(retrieved, set())                                  # all stored
    with pytest.raises(ValueError, match="budget_tokens"):
        WorkAhead(engine, budget_tokens=0)


def test_a_retrieved_rows_store_misses_are_its_work_and_its_stored_passages_are_not(engine):
    """One of the three retrieved passages is stored: the other two's gradients are the row's work
    (3x their tokens each), done into the gradient cache; under `missing_gradients` skip there is none."""
    engine.add_documents([Document(p.text, p.title, p.id) for p in engine.retriever.get(["p0"])])   # p0 stored
    ask = Question("Is Marrowick in Veltoria, near Dunmere?", top_k=3, composition=Composition("softmax", 0.4))
    [row] = engine.begin([ask])
    assert {p.id for p in row.passages} == {"p0", "p1", "p2"}
    cold = engine.cold_gradients(row)
    assert set(cold) == {"p1", "p2"}
    assert all(c.cost == 3 * n for c, n in zip(cold.values(), passage_token_counts(
        engine.learner, [c.text for c in cold.values()]), strict=True))
    WorkAhead(engine, budget_tokens=100_000).run_slice([(row, set())])
    assert engine.cold_gradients(row) == {} and len(engine.gradient_cache) == 2 and "p1" in engine.gradient_cache
    engine.missing_gradients = "skip"
    assert engine.cold_gradients(engine.begin([ask])[0]) == {}
