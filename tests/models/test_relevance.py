"""The base model's likelihood of a question given each passage (models/relevance.py): batched as it
would be alone, the base model's own number (the learner's LoRA has no say), and on the real model it
reads meaning that BM25 cannot."""

from __future__ import annotations

import pytest
import torch

from models.relevance import _BATCH_PAIRS, _PAD_SLACK, _length_groups, question_likelihoods, relevance_prompt
from models.tensor_cache import TensorCache
from retrieval.passage import Passage
from tests.conftest import make_tiny_base

FACTS = [Passage("a", "Nato Ishibayashi", "Nato Ishibayashi is a ferry captain by profession."),
         Passage("b", "Nato Ishibayashi", "Nato Ishibayashi was born in 1790 in a harbour town."),
         Passage("c", "", "Halric Moriova keeps 52 beehives on the hill above the mill.")]


def _by_hand(question: str, passage: Passage) -> float:
    """ℓ from a plain transformers forward of the tiny learner's base model (a fresh copy: the same
    seed), one pair, no padding, no LoRA anywhere."""
    base, tok = make_tiny_base(seed=0)
    before, after = relevance_prompt(passage)
    prefix = tok(before, add_special_tokens=False).input_ids + tok(passage.text, add_special_tokens=False).input_ids \
        + tok(after, add_special_tokens=False).input_ids
    q = tok(" " + question, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = base(input_ids=torch.tensor([prefix + q])).logits[0].float()
    lp = logits[len(prefix) - 1 : -1].log_softmax(-1).gather(1, torch.tensor(q)[:, None])
    return lp.mean().item()


def test_batched_scores_equal_each_pair_alone_and_the_base_models_own(tiny_learner):
    questions = [("What is the birth year of Nato Ishibayashi?", FACTS), ("Who keeps beehives?", FACTS[2:])]
    batched = question_likelihoods(tiny_learner, questions)
    assert [len(s) for s in batched] == [3, 1]
    for (question, passages), scores in zip(questions, batched, strict=True):
        for passage, score in zip(passages, scores, strict=True):
            assert score == pytest.approx(question_likelihoods(tiny_learner, [(question, [passage])])[0][0], abs=1e-5)
            assert score == pytest.approx(_by_hand(question, passage), abs=1e-4)
            assert score < 0


def test_forwards_are_grouped_so_that_padding_stays_small_and_every_item_runs_once():
    lengths = [180, 180, 180, 165, 153, 143, 136, 131, 128, 125, 118, 116, 111, 107, 105, 98] + [20] * 40
    groups = _length_groups(list(range(len(lengths))), lengths)
    assert [i for group in groups for i in group] == list(range(len(lengths)))   # all, once, in order
    for group in groups:
        real = sum(lengths[i] for i in group)
        assert len(group) <= _BATCH_PAIRS and lengths[group[0]] * len(group) <= (1 + _PAD_SLACK) * real
    assert len(groups) < 16 and [len(g) for g in groups[-3:]] == [16, 16, 8]   # alike lengths still batch
    assert _length_groups([], []) == []


def test_the_learners_lora_does_not_move_the_scores(tiny_learner_factory):
    """Two learners on the same base model with different LoRA weights score alike: the LoRA is off."""
    one = tiny_learner_factory(seed=0, randomize_b=True)
    other = tiny_learner_factory(seed=0, randomize_b=False)
    pairs = [("What is the birth year of Nato Ishibayashi?", FACTS)]
    assert question_likelihoods(one, pairs)[0] == pytest.approx(question_likelihoods(other, pairs)[0], abs=1e-6)
    assert any(t.abs().sum() > 0 for n, t in one.lora_tensors().items() if n.endswith("lora_B"))


def test_long_passages_are_cut_and_empty_questions_score_zero(tiny_learner):
    long, cut = (Passage(i, "Long", " ".join(["word"] * n)) for i, n in (("l", 2000), ("s", 32)))
    [[from_long]] = question_likelihoods(tiny_learner, [("Which word?", [long])], max_passage_tokens=32)
    [[from_cut]] = question_likelihoods(tiny_learner, [("Which word?", [cut])])
    assert from_long == pytest.approx(from_cut, abs=1e-5)
    assert question_likelihoods(tiny_learner, [("", FACTS[:2])]) == [[0.0, 0.0]]


def test_a_warm_prompt_cache_gives_the_same_scores_and_runs_no_passage_tokens(tiny_learner, monkeypatch):
    """The second question over the same passages reads their prompts' KV from the cache: the decoder
    then sees only each pair's last prompt token and question, and the scores equal the cold ones."""
    import models.relevance as relevance

    cache = TensorCache(max_bytes=2**26)
    cold = question_likelihoods(tiny_learner, [("Who keeps beehives?", FACTS)], cache=cache)
    assert len(cache) == 3 and cache.misses == 3 and cache.hits == 0
    widths = []
    prefix_pass = relevance._prefix_pass
    monkeypatch.setattr(relevance, "_prefix_pass", lambda learner, p: widths.append(len(p)) or prefix_pass(learner, p))
    question = "What is the birth year of Nato Ishibayashi?"
    warm = question_likelihoods(tiny_learner, [(question, FACTS), ("Who keeps beehives?", FACTS)], cache=cache)
    assert widths == [] and cache.hits == 3              # each distinct prompt read once; no passage ran again
    assert warm[1] == pytest.approx(cold[0], abs=1e-5)
    widths.clear()
    assert warm[0] == pytest.approx(question_likelihoods(tiny_learner, [(question, FACTS)])[0], abs=1e-5)
    assert sum(widths) == 3                                     # no cache: every prompt runs (grouped by length)
    widths.clear()
    # Another cut of a passage is another prompt, not a stale entry.
    question_likelihoods(tiny_learner, [("Which word?", [FACTS[0]])], cache=cache, max_passage_tokens=3)
    assert len(cache) == 4 and widths == [1]


def test_the_prompt_cache_keeps_to_its_byte_budget(tiny_learner):
    one = TensorCache(max_bytes=2**26)
    question_likelihoods(tiny_learner, [("Who?", FACTS[:1])], cache=one)
    entry_bytes = one.bytes
    small = TensorCache(max_bytes=entry_bytes * 2 + entry_bytes // 2)
    question_likelihoods(tiny_learner, [("Who?", FACTS)], cache=small)
    assert len(small) == 2 and small.bytes <= small.max_bytes
    small.clear()
    assert len(small) == 0 and small.bytes == 0


@pytest.mark.integration
def test_on_the_real_model_the_fact_asked_for_explains_the_question_best(real_learner):
    """BM25 ranks the profession sentence first for this question (the words "birth year" are in
    neither); the base model's likelihood ranks the birth sentence first, and another person's last."""
    other = Passage("d", "Nato Yamazaki", "Nato Yamazaki is a ferry captain by profession.")
    question = "What is the birth year of Nato Ishibayashi?"
    [[profession, birth, someone_else]] = question_likelihoods(real_learner, [(question, [*FACTS[:2], other])])
    assert birth > profession > someone_else


@pytest.mark.integration
def test_on_the_real_model_cached_prompts_score_as_a_whole_forward(real_learner):
    """The two passes (prompt KV cached, then the question) give what one forward over prompt and
    question gives (the untrained learner's LoRA B is zero: its plain forward is the base model's)."""
    question = "What is the birth year of Nato Ishibayashi?"
    cache = TensorCache(max_bytes=2**28)
    question_likelihoods(real_learner, [(question, FACTS)], cache=cache)
    warm = question_likelihoods(real_learner, [(question, FACTS)], cache=cache)[0]
    causal_lm = real_learner.model.get_base_model()
    tok = real_learner.tokenizer
    q = tok(" " + question, add_special_tokens=False).input_ids
    with torch.no_grad():
        for passage, score in zip(FACTS, warm, strict=True):
            before, after = relevance_prompt(passage)
            prefix = [*tok(before, add_special_tokens=False).input_ids,
                      *tok(passage.text, add_special_tokens=False).input_ids,
                      *tok(after, add_special_tokens=False).input_ids]
            logits = causal_lm(input_ids=torch.tensor([prefix + q])).logits[0].float()
            whole = logits[len(prefix) - 1 : -1].log_softmax(-1).gather(1, torch.tensor(q)[:, None]).mean().item()
            assert score == pytest.approx(whole, abs=1e-3)
