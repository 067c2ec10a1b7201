"""`regrad synth --varied`: training people in many more phrasings and kinds of fact, a dev split in
phrasings seen nowhere else, never a benchmark test phrasing, and the benchmark itself unchanged."""

import hashlib
import json
from pathlib import Path

import pytest

from cli.main import main
from offline_tools.benchmarks.synth import ATTRIBUTES, SynthConfig, generate
from offline_tools.benchmarks.synth_varied import (
    DEV_PHRASINGS,
    EXTRA_ATTRIBUTES,
    MORE_TRAIN_PHRASINGS,
    TRAIN_PHRASINGS,
    WIDE_DEV_PHRASINGS,
)
from tests.offline_tools.test_synth import _statement_pattern

HELD_OUT = [t for a in ATTRIBUTES for t in (a.statements[-1], a.questions[-1])]
BENCHMARK_TRAIN = [t for a in ATTRIBUTES for t in a.statements[:-1] + a.questions[:-1]]
EXTRA_TRAIN = [t for s, q in TRAIN_PHRASINGS.values() for t in s + q]
EXTRA_TRAIN += [t for a in EXTRA_ATTRIBUTES for t in a.statements + a.questions]
MORE_TRAIN = [t for s, q in MORE_TRAIN_PHRASINGS.values() for t in s + q]
DEV = [t for s, q in DEV_PHRASINGS.values() for t in s + q]
WIDE_DEV = [t for s, q in WIDE_DEV_PHRASINGS.values() for t in s + q]
TEST_FRAGMENTS = ("first saw the light of day", "arrived into the world", "currently dwells in", "is an employee",
                  "by trade", "has been married to")


def _matches(templates: list[str], text: str) -> set[str]:
    return {t for t in templates if _statement_pattern(t).fullmatch(text)}


def test_the_phrasing_sets_are_disjoint_and_never_a_test_phrasing():
    assert not set(EXTRA_TRAIN) & set(HELD_OUT) and not set(DEV) & set(HELD_OUT)
    assert not set(DEV) & (set(EXTRA_TRAIN) | set(BENCHMARK_TRAIN))
    for attribute in ATTRIBUTES:  # at least 8 statements and 7 questions new for their attribute (one birth
        statements, questions = TRAIN_PHRASINGS[attribute.key]  # year question repeats a benchmark one)
        assert len(set(statements) - set(attribute.statements)) >= 8, attribute.key
        assert len(set(questions) - set(attribute.questions)) >= 7, attribute.key
    # the fragments that mark each test phrasing appear in no varied statement either
    for fragment in TEST_FRAGMENTS:
        assert not [t for t in EXTRA_TRAIN + MORE_TRAIN + DEV if fragment in t.lower()], fragment
    assert set(TRAIN_PHRASINGS) == set(DEV_PHRASINGS) == {a.key for a in ATTRIBUTES}
    assert not {a.key for a in EXTRA_ATTRIBUTES} & {a.key for a in ATTRIBUTES}


def test_varied_people_use_their_own_phrasings_and_kinds_of_fact():
    corpus, questions = generate(SynthConfig(train_people=600, dev_people=80, test_people=0, varied=True))
    by_id = {p["_id"]: p for p in corpus}
    seen = {"train": set(), "dev": set()}
    for split in ("train", "dev"):
        for q in questions[split]:
            passage = by_id[q["passage"]]
            assert q["answers"][0] in passage["text"] and passage["title"] in q["question"]
            allowed = EXTRA_TRAIN + BENCHMARK_TRAIN if split == "train" else DEV
            for text in (passage["text"], q["question"]):
                assert _matches(allowed, text), (split, text)
                assert not _matches(HELD_OUT, text), text
                seen[split] |= _matches(allowed, text)
    assert len(seen["train"] & set(EXTRA_TRAIN)) > 0.9 * len(EXTRA_TRAIN)  # the extra phrasings are used
    assert seen["dev"] == set(DEV)
    kinds = {split: {q["attribute"] for q in rows} for split, rows in questions.items() if rows}
    assert kinds["train"] == {a.key for a in ATTRIBUTES + EXTRA_ATTRIBUTES}
    assert kinds["dev"] == {a.key for a in ATTRIBUTES}  # dev measures the benchmark's own six


def test_the_second_batch_is_new_and_used_only_when_asked():
    earlier = set(BENCHMARK_TRAIN) | set(EXTRA_TRAIN) | set(HELD_OUT) | set(DEV)
    assert set(MORE_TRAIN_PHRASINGS) == {a.key for a in ATTRIBUTES} and not set(MORE_TRAIN) & earlier
    for key, (statements, questions) in MORE_TRAIN_PHRASINGS.items():
        assert len(set(statements)) >= 9 and len(set(questions)) >= 7, key
        assert all("{name}" in t and ("{value}" in t or "{a_value}" in t) for t in statements), key
        assert all("{name}" in t for t in questions), key
    config = dict(train_people=600, dev_people=40, test_people=0, varied=True)
    corpus, questions = generate(SynthConfig(**config, more_phrasings=True))
    texts = [p["text"] for p in corpus if p["split"] == "train"] + [q["question"] for q in questions["train"]]
    used = set().union(*(_matches(MORE_TRAIN, text) for text in texts))
    assert len(used) > 0.9 * len(MORE_TRAIN)
    dev_texts = [p["text"] for p in corpus if p["split"] == "dev"] + [q["question"] for q in questions["dev"]]
    assert all(_matches(DEV, text) for text in dev_texts)  # dev people keep their own phrasings
    corpus, questions = generate(SynthConfig(**config))
    assert not any(_matches(MORE_TRAIN, p["text"]) for p in corpus)  # the first batch alone, as before
    with pytest.raises(ValueError, match="set `varied` too"):
        SynthConfig(more_phrasings=True)


def test_the_wide_dev_batch_is_unseen_and_used_only_when_asked():
    everything_else = BENCHMARK_TRAIN + EXTRA_TRAIN + MORE_TRAIN + DEV + HELD_OUT
    assert set(WIDE_DEV_PHRASINGS) == {a.key for a in ATTRIBUTES} and not set(WIDE_DEV) & set(everything_else)
    for fragment in TEST_FRAGMENTS:
        assert not [t for t in WIDE_DEV if fragment in t.lower()], fragment
    for key, (statements, questions) in WIDE_DEV_PHRASINGS.items():
        assert len(set(statements)) == len(set(questions)) == 8, key
        assert all("{name}" in t and ("{value}" in t or "{a_value}" in t) for t in statements), key
        assert all("{name}" in t for t in questions), key
    config = dict(train_people=200, dev_people=300, test_people=0, varied=True)
    corpus, questions = generate(SynthConfig(**config, wide_dev=True))
    dev_texts = [p["text"] for p in corpus if p["split"] == "dev"] + [q["question"] for q in questions["dev"]]
    train_texts = [p["text"] for p in corpus if p["split"] == "train"] + [q["question"] for q in questions["train"]]
    for text in dev_texts:  # each wide dev sentence is one of the dev phrasings, never a test one
        assert _matches(DEV + WIDE_DEV, text) and not _matches(HELD_OUT, text), text
    assert set().union(*(_matches(WIDE_DEV, text) for text in dev_texts)) == set(WIDE_DEV)  # all of it is used
    assert not any(_matches(WIDE_DEV, text) for text in train_texts)  # training never sees it
    corpus, questions = generate(SynthConfig(**config))  # off: dev people in the narrow dev phrasings only
    dev_texts = [p["text"] for p in corpus if p["split"] == "dev"] + [q["question"] for q in questions["dev"]]
    assert len(dev_texts) > 1000 and not any(_matches(WIDE_DEV, text) for text in dev_texts)
    with pytest.raises(ValueError, match="set `varied` too"):
        SynthConfig(wide_dev=True)


def test_the_benchmark_is_unchanged_by_the_varied_option():
    """The seed-0 benchmark every figure in docs/results.md was measured on: its test questions, byte
    for byte as `regrad synth --seed 0` writes them (the shipped files' md5)."""
    _, questions = generate(SynthConfig())
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in questions["test"])
    assert hashlib.md5(text.encode()).hexdigest() == "ab7e4d76513688b2caffef5e35258d83"


def test_cli_writes_a_varied_set_and_refuses_test_people(tmp_path: Path, capsys):
    out = tmp_path / "varied"
    assert main(["synth", "--output", str(out), "--varied", "--train-people", "20", "--dev-people", "5",
                 "--test-people", "0", "--id-prefix", "v1"]) == 0
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["varied"] is True and manifest["questions"]["test"] == 0
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main(["synth", "--output", str(refused), "--varied"]) == 2  # the default 60 test people
    assert "test_people=60" in capsys.readouterr().err and not refused.exists()
    more, first = tmp_path / "more", tmp_path / "first"  # --avoid repeats: no name of either set is drawn again
    assert main(["synth", "--output", str(more), "--varied", "--more-phrasings", "--train-people", "20",
                 "--dev-people", "0", "--test-people", "0", "--id-prefix", "v2", "--avoid", str(out),
                 "--avoid", str(first)]) != 0  # a folder that is not there yet is named
    assert str(first / "corpus.jsonl") in capsys.readouterr().err and not more.exists()
    assert main(["synth", "--output", str(first), "--train-people", "20", "--dev-people", "5",
                 "--test-people", "5", "--seed", "1"]) == 0
    assert main(["synth", "--output", str(more), "--varied", "--more-phrasings", "--train-people", "20",
                 "--dev-people", "0", "--test-people", "0", "--id-prefix", "v2", "--avoid", str(out),
                 "--avoid", str(first)]) == 0
    names = {json.loads(line)["title"] for line in (more / "corpus.jsonl").open()}
    for earlier in (out, first):
        assert not names & {json.loads(line)["title"] for line in (earlier / "corpus.jsonl").open()}
    manifest = json.loads((more / "synth.json").read_text())
    assert manifest["config"]["more_phrasings"] is True and manifest["avoided_names"] > 25


@pytest.mark.parametrize("attribute", EXTRA_ATTRIBUTES, ids=lambda a: a.key)
def test_extra_attributes_state_their_value(attribute):
    import random

    value = attribute.draw(random.Random(0))
    for template in attribute.statements:
        assert "{name}" in template and "{value}" in template or "{a_value}" in template
    assert value in attribute.aliases(value)
