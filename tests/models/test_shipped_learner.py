"""The meta-trained learner the project ships (`checkpoints/regrad-smollm2-135m`), on the real model.

It loads with its recorded fingerprint, and on synthetic test facts (invented people, stated and
asked in the phrasings held out from training) it answers with the gradients of the person's
passages applied and does not without them: the knowledge comes from the gradients, not the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import AnswerRequest, Learner, format_passage, generate_answers, summed_gradient
from models.decoding import BatchDecoder, stop_token_ids
from models.generate import answer_text, prepare_rows
from offline_tools.benchmarks.synth import SynthConfig, generate
from offline_tools.evaluation.metrics import score

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "regrad-smollm2-135m"
N_FACTS = 24


@pytest.fixture(scope="module")
def shipped() -> Learner:
    meta = json.loads((SHIPPED / "learner.json").read_text())
    return Learner.load(SHIPPED, expect_fingerprint=meta["fingerprint"])


def test_the_shipped_learner_is_small_and_complete():
    """The average of run 14's export and run 27 (a fourth set of extra relations, warm-started from that
    export), with its served composition; run 14 (a second set of extra relations) warm-started from run 13's
    export (extra relations and real passages), itself warm-started from run 8's export (composition in the
    inner step), itself warm-started from the average
    of run 5 and its start (the average of run 3 and its start, the average of runs 1 and 2), with the
    whole lineage flat: lineage.json lists the steps in order, each run's record sits in
    runs/<fingerprint[:12]>/, and nothing nests."""
    files = {p.relative_to(SHIPPED).as_posix(): p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()}
    assert sum(files.values()) <= 5_000_000
    assert not [f for f in files if f.count("/") > 2], "records nest"
    lineage = json.loads((SHIPPED / "lineage.json").read_text())
    meta = json.loads((SHIPPED / "learner.json").read_text())
    steps = lineage["steps"]
    assert lineage["learner"] == meta["fingerprint"] == steps[-1]["fingerprint"]
    assert [s["kind"] for s in steps] == ["run", "run", "average", "run", "average", "run", "average", "run",
                                          "export", "run", "export", "run", "export", "run", "average"]
    assert steps[-1]["composition"] == meta["composition"]          # the served default, recorded at export
    # rule 22a (docs/results.md): the weights sum to the total the learner was trained at (3) for every k
    from engine.composition import Composition

    assert Composition.parse(meta["composition"]).total == 3
    known: set[str] = set()
    for step in steps:   # each step names only what came before it, and each fingerprint once
        assert step["fingerprint"] not in known
        if step["kind"] == "run":
            assert step["init_from"] is None or step["init_from"] in known
            record = ("training_log.jsonl.gz", "training_curves.png", "train_args.json", "summary.json")
            assert {f"{step['record']}/{name}" for name in record} <= set(files)
            assert step["record"] == f"runs/{step['fingerprint'][:12]}"
        else:
            assert len(step["of"]) == (2 if step["kind"] == "average" else 1) and set(step["of"]) <= known
        known.add(step["fingerprint"])
    runs = [s for s in steps if s["kind"] == "run"]
    averages = [s for s in steps if s["kind"] == "average"]
    # each warm start begins at the average before it, and each later average is the run with its start
    assert [r["init_from"] for r in runs] == [None, None, averages[0]["fingerprint"], averages[1]["fingerprint"],
                                             averages[2]["fingerprint"], steps[-7]["fingerprint"],
                                             steps[-5]["fingerprint"], steps[-3]["fingerprint"]]
    assert [a["of"] for a in averages[1:]] == [[runs[2]["fingerprint"], averages[0]["fingerprint"]],
                                               [runs[3]["fingerprint"], averages[1]["fingerprint"]],
                                               [steps[-3]["fingerprint"], runs[-1]["fingerprint"]]]
    assert steps[-1]["weights_dtype"] == "float16"   # the first learner shipped in export's default


def test_the_shipped_learner_answers_unseen_facts_from_their_gradients_only(shipped: Learner):
    corpus, questions = generate(SynthConfig(seed=0))          # the benchmark the demo writes
    facts = questions["test"][:N_FACTS]

    def person(q: dict) -> list[str]:  # all of the person's facts (2-3 passages), as top-3 retrieval gives
        return [format_passage(p["title"], p["text"]) for p in corpus if p["_id"].startswith(q["entity"] + "-")]

    requests = {
        "regrad": [AnswerRequest(q["question"], gradient=summed_gradient(shipped, person(q))) for q in facts],
        "closed_book": [AnswerRequest(q["question"]) for q in facts],
    }
    em = {mode: sum(score(a, q["answers"], "short").em > 0
                    for a, q in zip(generate_answers(shipped, batch, max_new_tokens=12), facts))
          for mode, batch in requests.items()}
    # Closed-book may guess one (an occupation from a common list); the gradients must add many.
    assert em["closed_book"] <= 1, em
    assert em["regrad"] >= em["closed_book"] + N_FACTS // 3, em   # 80.7 % on the whole test split (docs/results.md)


# `make train` reproduces these runs: its recipe (checkpoints/regrad-smollm2-135m/recipe.toml) is checked
# against each run's train_args.json in tests/cli/test_recipe.py (no model needed).


def test_the_shipped_learners_answers_stop_at_the_next_turns_start_with_the_same_text(shipped: Learner, monkeypatch):
    """The learner ends its answers with `<|im_start|>` and then a newline. `<|im_start|>` is a stop
    token: every answer is the text it was when the newline stopped it, one decode step shorter."""
    corpus, questions = generate(SynthConfig(seed=0))
    facts = questions["test"][:6]
    requests = [AnswerRequest(q["question"], gradient=summed_gradient(
        shipped, [format_passage(p["title"], p["text"]) for p in corpus if p["_id"].startswith(q["entity"] + "-")]))
        for q in facts] + [AnswerRequest(q["question"]) for q in facts]
    im_start = shipped.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert im_start in stop_token_ids(shipped.tokenizer)

    def tokens(rows: list[AnswerRequest]) -> list[list[int]]:
        batch, adapters = prepare_rows(shipped, rows)
        decoder = BatchDecoder(shipped)
        decoder.join(list(range(len(rows))), batch, adapters, [20] * len(rows))
        done: dict[int, list[int]] = {}
        while decoder:
            done.update(decoder.step())
        return [done[i] for i in range(len(rows))]

    now = tokens(requests)
    monkeypatch.setattr("models.decoding.stop_token_ids", lambda tok: stop_token_ids(tok) - {im_start})
    before = tokens(requests)
    assert all(ids[-1] == im_start for ids in now)                       # every answer ended there
    assert [len(ids) for ids in now] == [len(ids) - 1 for ids in before]  # one step fewer each
    assert [answer_text(shipped.tokenizer, a, r) for a, r in zip(now, requests)] == [
        answer_text(shipped.tokenizer, b, r) for b, r in zip(before, requests)]
