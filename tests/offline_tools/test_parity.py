"""Training/serving parity: the model meta-training optimises is the model the service answers with.

For one question, the logits of its first answer token in the training objective (`outer_loss`'s
forward, δ = −α ⊙ G with G computed on the fly, its passages combined as served: the plain sum or
the score softmax) equal the served engine's (passages retrieved by
tantivy, G summed from a real bf16 gradient store, per-row adaptation, SDPA prefill), within the
store codec's rounding.
"""

from __future__ import annotations

import pytest
import torch

from engine import Question, mode_spec
from engine.composition import Composition
from engine.core import Engine, _Row
from gradient_store import GradientStore
from models import format_passage, passage_gradients
from models.generate import next_token_logits
from offline_tools.datasets.augmented import AugmentedPassage, AugmentedRecord
from offline_tools.training.meta import answer_logits, task_deltas, task_passages, task_weights
from retrieval import Passage
from retrieval.tantivy_backend import TantivyRetriever

CORPUS = [
    Passage("p1", "Kavo Drenski", "Kavo Drenski was born in the town of Velmora in 1873."),
    Passage("p2", "Mira Kovski", "Mira Kovski works as a botanist for the Ostberg Institute."),
    Passage("p3", "Velmora", "Velmora is a small town on the river Ard, known for its glass."),
    Passage("p4", "Ardo Vel", "Ardo Vel lives in Quenford and is married to Lina Ros."),
]
QUESTION = "In which town was Kavo Drenski born?"


@pytest.mark.parametrize("composition", [Composition("sum"), Composition("softmax", 0.3)])
def test_training_and_serving_compute_the_same_adapted_logits(tiny_learner_factory, tmp_path, composition):
    learner = tiny_learner_factory(seed=7, randomize_b=True)
    with torch.no_grad():
        for p in learner.step_sizes.parameters():
            p.fill_(2.0)  # a large step, so the adaptation moves the logits far more than any tolerance
    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add(CORPUS)
    store = GradientStore.create(tmp_path / "store", layout=learner.layout.to_json(), fingerprint=learner.fingerprint)
    store.append([p.id for p in CORPUS], passage_gradients(learner, [format_passage(p.title, p.text) for p in CORPUS]))
    engine = Engine(learner, retriever, store, missing_gradients="skip", composition=composition)

    # Serving: retrieve, sum the stored gradients, build the generation request, first-token logits.
    row = _Row(Question(QUESTION, mode="regrad", top_k=2), mode_spec("regrad"))
    engine._retrieve([row])
    engine._gradients([row])
    assert row.error is None and row.sources == ["stored", "stored"]
    served = next_token_logits(learner, [engine.generation_request(row)])[0]

    # Training: the same question and passages as an augmented record, δ = −α ⊙ G from `task_deltas`.
    record = AugmentedRecord(id="q", dataset="synth", question=QUESTION, answers=["Velmora"], answer_type="short",
                             choices=None, passages=[AugmentedPassage(p.id, p.title, p.text, p.score)
                                                     for p in row.passages])
    temperature = composition.temperature if composition.kind == "softmax" else None
    weights = task_weights(record, 2, temperature)                    # the inner step's, as served
    assert (weights is None) == (composition.kind == "sum")
    deltas = {k: v.detach() for k, v in task_deltas(learner, [task_passages(record, 2)], create_graph=False,
                                                    weights=[weights]).items()}
    with torch.no_grad():
        trained, _, _, _ = answer_logits(learner, [record], deltas, blind=True, top_k=2)
        unadapted, _, _, _ = answer_logits(learner, [record], None, blind=True, top_k=2)
    trained, unadapted = trained[0].float(), unadapted[0].float()

    effect = (trained - unadapted).abs().max()
    assert effect > 0.05                                  # the update really changes the logits
    assert (served - trained).abs().max() < 0.02 * effect  # and serving reproduces it to the codec's rounding
    assert int(served.argmax()) == int(trained.argmax())
