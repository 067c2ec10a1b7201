"""Composition: how a request's passage gradients are combined (engine/composition.py), and the engine
applying exactly that combination to stored and computed gradients (tiny learner, real tantivy, real store)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine import Question
from engine.composition import DEFAULT_TEMPERATURES, Composition
from engine.core import Engine, open_store
from models import format_passage, passage_gradients
from models.relevance import question_likelihoods
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever


def test_sum_weights_every_passage_one():
    assert Composition("sum").weights([30.0, 2.0, 1.0]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 2.0])
def test_softmax_keeps_the_magnitude_and_follows_the_scores(temperature):
    weights = Composition("softmax", temperature).weights([30.0, 12.0, 11.0, 29.0])
    assert math.isclose(sum(weights), 4.0, rel_tol=1e-9)           # magnitude of the plain sum
    assert weights[0] > weights[3] > weights[1] > weights[2] > 0     # ordered as the scores


def test_softmax_weights_depend_on_score_ratios_not_scale():
    """Normalised per request: the same ranking at 10x the BM25 scale gets the same weights."""
    small = Composition("softmax", 0.2).weights([3.0, 2.0, 1.5])
    large = Composition("softmax", 0.2).weights([30.0, 20.0, 15.0])
    assert small == pytest.approx(large, rel=1e-12)


def test_temperature_moves_from_top_one_to_the_sum():
    scores = [20.0, 10.0, 9.0]
    sharp = Composition("softmax", 0.01).weights(scores)
    flat = Composition("softmax", 1000.0).weights(scores)
    assert sharp == pytest.approx([3.0, 0.0, 0.0], abs=1e-6)
    assert flat == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)


@pytest.mark.parametrize("scores", [[None, 3.0], [0.0, 0.0, 0.0], [-1.0, -2.0], [5.0], [float("nan"), 1.0]])
def test_unscored_or_degenerate_passages_are_weighted_equally(scores):
    assert Composition("softmax", 0.1).weights(scores) == [1.0] * len(scores)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_likelihood_weights_keep_the_magnitude_and_depend_on_differences_only(temperature):
    """Log-likelihoods: the softmax of ℓ / T with no per-request rescaling (adding a constant to
    every ℓ, as a longer question does to all its passages alike, changes nothing)."""
    composition = Composition("likelihood", temperature)
    weights = composition.weights([-1.1, -1.3, -2.6, -1.2])
    assert math.isclose(sum(weights), 4.0, rel_tol=1e-9)
    assert weights[0] > weights[3] > weights[1] > weights[2] > 0
    assert composition.weights([-0.1, -0.3, -1.6, -0.2]) == pytest.approx(weights, rel=1e-12)
    assert Composition("likelihood", 0.001).weights([-1.0, -1.5]) == pytest.approx([2.0, 0.0], abs=1e-9)


@pytest.mark.parametrize("scores", [[None, -3.0], [-1.0], [float("nan"), -1.0]])
def test_likelihood_without_scores_weighs_equally(scores):
    assert Composition("likelihood", 0.5).weights(scores) == [1.0] * len(scores)


def test_each_kind_has_its_own_default_temperature():
    assert Composition.parse("likelihood") == Composition("likelihood", DEFAULT_TEMPERATURES["likelihood"])
    assert Composition.parse("softmax") == Composition("softmax", DEFAULT_TEMPERATURES["softmax"])
    assert str(Composition.parse("likelihood:0.25")) == "likelihood:0.25"
    assert Composition("likelihood").needs_likelihood and not Composition("softmax").needs_likelihood


def test_parse_and_refusals():
    assert Composition.parse("softmax:0.25") == Composition("softmax", 0.25)
    assert Composition.parse(" sum ").kind == "sum"
    assert str(Composition.parse("softmax:0.25")) == "softmax:0.25" and str(Composition("sum")) == "sum"
    for bad, words in (("mean", "one of"), ("softmax:x", "number"), ("softmax:0", "> 0"), ("softmax:inf", "> 0")):
        with pytest.raises(ValueError, match=words):
            Composition.parse(bad)



@pytest.mark.parametrize("spec", ["softmax:0.1:3", "likelihood:0.2:3"])
def test_a_total_makes_the_weights_sum_to_it_at_every_k_in_the_same_proportions(spec):
    """`KIND:T:M`: the weights of 1, 3 or 5 passages (scored or not) sum to M, each the k-sum's times M / k."""
    total = Composition.parse(spec)
    plain = Composition(total.kind, total.temperature)
    for scores in ([-1.0], [30.0, -1.3, 12.0], [5.0, 4.0, 3.0, 2.0, 1.0], [None, None]):
        weights = total.weights(scores)
        assert sum(weights) == pytest.approx(3.0, rel=1e-9)
        assert weights == pytest.approx([w * 3.0 / len(scores) for w in plain.weights(scores)], rel=1e-12)
    assert total.weights([]) == []
    assert str(total) == spec and Composition.parse(str(total)) == total
    assert str(Composition.parse("likelihood:0.2")) == "likelihood:0.2"      # no total: as before


def test_a_total_is_refused_where_it_means_nothing_or_is_not_positive():
    for bad, words in (("sum:1:3", "plain sum has no weights' total"), ("softmax:0.1:x", "total must be a number"),
                       ("likelihood:0.2:0", "total must be finite and > 0"), ("softmax:0.1:nan", "> 0")):
        with pytest.raises(ValueError, match=words):
            Composition.parse(bad)

# ----------------------------------------------------------------------------- the engine applies it
FACTS = [
    ("Ada Quillmore", "Ada Quillmore kept the lighthouse on the island of Vessholm."),
    ("Bram Quillmore", "Bram Quillmore kept the lighthouse on the island of Orrinsey."),
    ("Cato Fenwright", "Cato Fenwright kept the lighthouse on the island of Tallow Rock."),
]


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    retriever = TantivyRetriever(tmp_path / "index")
    passages = [Passage(f"p{i}", title, text) for i, (title, text) in enumerate(FACTS)]
    retriever.add(passages)
    store = open_store(tmp_path / "store", tiny_learner)
    store.append(["p0"], passage_gradients(tiny_learner, [format_passage(*FACTS[0])]))  # p1, p2: computed
    engine = Engine(tiny_learner, retriever, store, missing_gradients="compute")
    yield engine
    engine.close()


@pytest.mark.parametrize("composition", [Composition("sum"), Composition("softmax", 0.1), Composition("softmax", 2.0)])
def test_the_engine_applies_the_weighted_sum_of_stored_and_computed_gradients(engine, composition):
    question = Question("On which island did Ada Quillmore keep the lighthouse?", top_k=3, composition=composition)
    [row] = engine.begin([question])
    engine.complete([row])
    assert [p.id for p in row.passages][0] == "p0" and len(row.passages) == 3
    assert row.sources.count("stored") == 1 and row.sources.count("computed") == 2
    expected_weights = composition.weights([p.score for p in row.passages])
    assert row.weights == expected_weights
    each = passage_gradients(engine.learner, [format_passage(p.title, p.text) for p in row.passages])
    stored = engine.store.get(["p0"])["p0"]              # the stored row is bf16: use it as stored
    each[0] = stored
    expected = (each * torch.tensor(expected_weights)[:, None]).sum(0)
    assert torch.allclose(row.gradient, expected, rtol=1e-4, atol=1e-7)


def test_answers_report_the_weights_and_the_composition(engine):
    regrad, rag = engine.answer_batch([
        Question("On which island did Ada Quillmore keep the lighthouse?", composition=Composition("softmax", 0.1),
                 max_new_tokens=2),
        Question("On which island did Ada Quillmore keep the lighthouse?", mode="rag", max_new_tokens=2),
    ])
    weights = [p.weight for p in regrad.passages]
    assert sum(weights) == pytest.approx(3.0) and weights[0] == max(weights) and regrad.composition == "softmax:0.1"
    assert all(p.weight is None for p in rag.passages) and rag.composition is None


def test_a_lone_passage_under_a_total_takes_the_step_of_gamma_total(engine):
    """k = 1 at `softmax:0.1:3` applies exactly the update of k = 1 at γ = 3 (what rule 22a's reads assume)."""
    question = "On which island did Ada Quillmore keep the lighthouse?"
    [total] = engine.begin([Question(question, top_k=1, composition=Composition.parse("softmax:0.1:3"))])
    [gamma] = engine.begin([Question(question, top_k=1, composition=Composition("softmax", 0.1), gamma=3.0)])
    engine.complete([total, gamma])
    assert total.weights == [3.0] and gamma.weights == [1.0]
    torch.testing.assert_close(total.gradient * 1.0, gamma.gradient * 3.0)


def test_a_request_without_composition_gets_the_engine_default(engine):
    engine.composition = Composition("sum")
    answer = engine.answer_batch([Question("Who kept the lighthouse on Orrinsey?", max_new_tokens=2)])[0]
    assert answer.composition == "sum" and [p.weight for p in answer.passages] == [1.0, 1.0, 1.0]


def test_given_passages_are_weighted_by_their_own_scores_or_equally_without(engine):
    from engine.types import GivenPassage

    passages = [GivenPassage(text, title) for title, text in FACTS]
    scored = tuple(GivenPassage(p.text, p.title, score=s) for p, s in zip(passages, (30.0, 10.0, 9.0)))
    composition = Composition("softmax", 0.1)
    plain, weighted = engine.answer_batch([
        Question("Who kept the lighthouse on Vessholm?", passages=tuple(passages), composition=composition,
                 max_new_tokens=2),
        Question("Who kept the lighthouse on Vessholm?", passages=scored, composition=composition, max_new_tokens=2),
    ])
    assert [p.weight for p in plain.passages] == [1.0, 1.0, 1.0]
    assert [p.weight for p in weighted.passages] == pytest.approx(composition.weights([30.0, 10.0, 9.0]))


def test_likelihood_weights_come_from_the_question_given_each_passage(engine):
    """The engine scores the retrieved passages with the base model and weighs them by those scores,
    not by BM25's; the answer reports the weights and the composition."""
    composition = Composition("likelihood", 0.05)
    question = "On which island did Ada Quillmore keep the lighthouse?"
    [row] = engine.begin([Question(question, top_k=3, composition=composition)])
    engine.complete([row])
    [likelihoods] = question_likelihoods(engine.learner, [(question, row.passages)])
    assert row.weights == pytest.approx(composition.weights(likelihoods), rel=1e-6)
    assert row.weights != pytest.approx(Composition("softmax", 0.05).weights([p.score for p in row.passages]))
    answer = engine.answer_batch([Question(question, composition=composition, max_new_tokens=2)])[0]
    assert answer.composition == "likelihood:0.05" and sum(p.weight for p in answer.passages) == pytest.approx(3.0)


def test_a_passage_scored_again_reads_its_prompt_from_the_engines_relevance_cache(engine, monkeypatch):
    """The engine keeps each scored passage prompt's KV: a second question over the same passages adds
    no entry and hits, and its weights are those of a scoring without any cache."""
    from models.tensor_cache import TensorCache

    monkeypatch.setattr(engine, "relevance_cache", TensorCache(2**28))
    composition = Composition("likelihood", 0.05)
    question = "On which island did Ada Quillmore keep the lighthouse?"
    engine.answer_batch([Question(question, composition=composition, max_new_tokens=2)])
    entries, hits = len(engine.relevance_cache), engine.relevance_cache.hits
    assert entries == 3
    again = "Which lighthouse did Ada Quillmore keep?"
    [row] = engine.begin([Question(again, top_k=3, composition=composition, retrieval_query=question)])
    engine.complete([row])
    assert len(engine.relevance_cache) == entries and engine.relevance_cache.hits == hits + 3
    [cold] = question_likelihoods(engine.learner, [(question, row.passages)])
    assert row.weights == pytest.approx(composition.weights(cold), rel=1e-4)


def test_likelihood_weighs_a_callers_own_unscored_passages(engine):
    from engine.types import GivenPassage

    passages = tuple(GivenPassage(text, title) for title, text in FACTS)
    question = "Who kept the lighthouse on Vessholm?"
    answer = engine.answer_batch([Question(question, passages=passages, composition=Composition("likelihood", 0.05),
                                           max_new_tokens=2)])[0]
    [likelihoods] = question_likelihoods(engine.learner, [(question, [Passage("", t, x) for t, x in FACTS])])
    assert [p.weight for p in answer.passages] == pytest.approx(Composition("likelihood", 0.05).weights(likelihoods),
                                                                 rel=1e-6)
    assert len({round(p.weight, 6) for p in answer.passages}) == 3          # not the plain sum's 1, 1, 1


def test_staging_reads_the_stored_gradients_before_the_model_thread_sums_them(engine):
    """`begin` (the staging thread: no torch work) prefetches the stored rows into the store's cache,
    so `complete`'s sum on the model thread reads no shard and checks no CRC32."""
    engine.store.clear_cache()
    [row] = engine.begin([Question("On which island did Ada Quillmore keep the lighthouse?", top_k=3)])
    assert engine.store.cache_stats()["rows"] == 1                      # p0, the one stored
    misses = engine.store.cache_stats()["misses"]
    engine.complete([row])
    assert engine.store.cache_stats()["misses"] == misses             # the sum hit the cache
    assert row.sources.count("stored") == 1
