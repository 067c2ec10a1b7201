"""`bench/miss_margins.py` scores a wrong answer and the gold under the row the prediction line records: its
log-probabilities are those of a full forward through the served row adapter, and the kind follows them."""

from __future__ import annotations

import json

import pytest
import torch

PASSAGES = [("p1", "Veltoria", "Veltoria is an island nation. Its capital is Marrowick."),
            ("p2", "Dunmere", "Dunmere is a mountain village known for its cheese.")]



def _served_logprob(learner, question: str, gradient: torch.Tensor, answer: str) -> float:
    """Summed log-probability of `answer` + the learner's end token through the row adapter serving folds."""
    from models import AnswerRequest
    from models.decoding import end_of_turn_id
    from models.generate import prepare_rows

    tok = learner.tokenizer
    batch, adapters = prepare_rows(learner, [AnswerRequest(question, gradient=gradient)])
    prompt = batch["input_ids"][0].tolist()
    target = tok(answer, add_special_tokens=False)["input_ids"] + [end_of_turn_id(tok, "<|im_start|>")]
    with torch.no_grad(), learner.using_rows(adapters):
        logits = learner.model.get_base_model()(input_ids=torch.tensor([prompt + target])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target))


def test_a_miss_is_scored_under_its_recorded_row_and_called_search_or_reading(tmp_path, monkeypatch, capsys,
                                                                           bench_script):
    from models import format_passage, passage_gradients
    from offline_tools.datasets.augmented import AugmentedPassage, AugmentedRecord, write_augmented
    from tests.conftest import make_tiny_base, make_tiny_learner

    learner = make_tiny_learner()
    learner.save(tmp_path / "learner")
    monkeypatch.setattr("models.learner.load_base_model", lambda name, dtype="float32", device="cpu": make_tiny_base())
    question = "What is the capital of Veltoria?"
    record = AugmentedRecord(id="q1", dataset="synth", question=question, answers=["Marrowick"],
                             passages=[AugmentedPassage(i, t, x, 9.0 - n) for n, (i, t, x) in enumerate(PASSAGES)])
    write_augmented(tmp_path / "aug.jsonl", [record])
    weights = [2.5, 0.5]
    lines = [{"id": "q1", "mode": "regrad", "answer": own, "gold": ["Marrowick"], "scores": {"em": 0.0},
              "passages": [{"id": i, "weight": w} for (i, _, _), w in zip(PASSAGES, weights)]}
             for own in ("Dunmere cheese", "Marrow")]
    lines.append({**lines[0], "answer": "Marrowick", "scores": {"em": 1.0}})   # a hit: not a miss
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    miss_margins = bench_script("miss_margins")
    assert miss_margins.main(["--checkpoint", str(tmp_path / "learner"), "--data", str(tmp_path / "aug.jsonl"),
                           "--predictions", str(tmp_path / "pred.jsonl"), "--dtype", "float32",
                           "--output", str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [m["answer"] for m in out["misses"]] == ["Dunmere cheese", "Marrow"]
    texts = [format_passage(t, x) for _, t, x in PASSAGES]
    gradient = (torch.tensor(weights)[:, None] * passage_gradients(learner, texts)).sum(0)
    gold = _served_logprob(learner, question, gradient, "Marrowick")
    for miss in out["misses"]:
        assert miss["logprob_gold"] == pytest.approx(gold, abs=2e-3)
        assert miss["logprob_own"] == pytest.approx(_served_logprob(learner, question, gradient, miss["answer"]),
                                                    abs=2e-3)
        assert miss["kind"] == ("search" if miss["logprob_gold"] > miss["logprob_own"] else "reading")
    assert sum(out["by_relation"]["q1"].values()) == 2
