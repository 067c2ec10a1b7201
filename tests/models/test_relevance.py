"""The base model's likelihood of a question given each passage (models/relevance.py): batched as it
would be alone, the base model's own number (the learner's LoRA has no say), and on the real model it
reads meaning that BM25 cannot."""

from __future__ import annotations

import pytest
import torch

from models.relevance import question_likelihoods, relevance_prompt
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


@pytest.mark.integration
def test_on_the_real_model_the_fact_asked_for_explains_the_question_best(real_learner):
    """BM25 ranks the profession sentence first for this question (the words "birth year" are in
    neither); the base model's likelihood ranks the birth sentence first, and another person's last."""
    other = Passage("d", "Nato Yamazaki", "Nato Yamazaki is a ferry captain by profession.")
    question = "What is the birth year of Nato Ishibayashi?"
    [[profession, birth, someone_else]] = question_likelihoods(real_learner, [(question, [*FACTS[:2], other])])
    assert birth > profession > someone_else
