"""`regrad synth`: deterministic, split by person, held-out phrasings only in test, readable by augment."""

import json
from pathlib import Path

import pytest

from cli.main import main
from offline_tools.benchmarks.synth import ATTRIBUTES, SynthConfig, generate, write_benchmark
from offline_tools.datasets import load_split


def _small(seed: int = 0) -> SynthConfig:
    return SynthConfig(train_people=40, dev_people=8, test_people=10, seed=seed)


def test_same_seed_same_benchmark_other_seed_other_people():
    assert generate(_small()) == generate(_small())
    names = {p["title"] for p in generate(_small())[0]}
    assert names != {p["title"] for p in generate(_small(seed=1))[0]}


def test_people_are_split_and_every_question_is_answered_by_its_passage():
    corpus, questions = generate(_small())
    by_id = {p["_id"]: p for p in corpus}
    people = {p["_id"].rsplit("-", 1)[0]: p["title"] for p in corpus}
    assert len(people) == len(set(people.values())) == 58                 # unique people and names
    assert all(2 <= sum(p["title"] == name for p in corpus) <= 3 for name in people.values())
    entities = {split: {q["entity"] for q in rows} for split, rows in questions.items()}
    assert not entities["train"] & entities["test"] and not entities["train"] & entities["dev"]
    assert not entities["dev"] & entities["test"]
    for rows in questions.values():
        for q in rows:
            passage = by_id[q["passage"]]
            assert passage["title"] in q["question"] and passage["title"] in passage["text"]
            assert q["answers"][0] in passage["text"]


def _statement_pattern(template: str):
    import re

    pattern = re.escape(template).replace(r"\{name\}", ".+?").replace(r"\{value\}", ".+?")
    return re.compile(pattern.replace(r"\{a_value\}", "an? .+?"), flags=re.IGNORECASE)


def test_the_last_phrasing_of_each_attribute_appears_in_test_only():
    corpus, questions = generate(SynthConfig(train_people=300, dev_people=10, test_people=60))
    for attribute in ATTRIBUTES:
        held_out_question = _statement_pattern(attribute.questions[-1])
        asked = {split: any(q["attribute"] == attribute.key and held_out_question.fullmatch(q["question"])
                            for q in rows) for split, rows in questions.items()}
        assert asked == {"train": False, "dev": False, "test": True}, attribute.key
        for q in questions["test"]:
            if q["attribute"] == attribute.key:
                assert held_out_question.fullmatch(q["question"]), q["question"]
    train_text = " ".join(p["text"] for p in corpus if p["split"] == "train")
    test_text = " ".join(p["text"] for p in corpus if p["split"] == "test")
    for fragment in ("first saw the light of day", "arrived into the world", "currently dwells in",
                     "is an employee", "by trade", "has been married to"):
        assert fragment in test_text and fragment not in train_text


def test_written_files_are_read_by_the_synth_dataset_loader(tmp_path: Path):
    manifest = write_benchmark(tmp_path, _small())
    assert manifest["questions"]["test"] == len(load_split("synth", tmp_path, "test"))
    train = load_split("synth", tmp_path, "train")
    assert train[0].dataset == "synth" and train[0].answers and train[0].answer_type == "short"
    assert json.loads((tmp_path / "synth.json").read_text())["held_out_for_test"]["birthplace"]["question"]


def test_cli_writes_the_benchmark_and_refuses_negative_counts(tmp_path: Path, capsys):
    assert main(["synth", "--output", str(tmp_path / "b"), "--train-people", "5", "--dev-people", "1",
                 "--test-people", "2"]) == 0
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"corpus.jsonl", "train.jsonl", "dev.jsonl",
                                                           "test.jsonl", "synth.json"}
    assert main(["synth", "--output", str(tmp_path / "c"), "--train-people", "-1"]) != 0
    assert "train_people" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=lambda a: a.key)
def test_each_attribute_has_several_phrasings(attribute):
    assert len(attribute.statements) >= 6 and len(attribute.questions) >= 6
    assert len(set(attribute.statements)) == len(attribute.statements)


def _titles(folder: Path) -> set[str]:
    return {json.loads(line)["title"] for line in (folder / "corpus.jsonl").read_text().splitlines()}


def test_a_second_training_set_avoids_the_first_ones_people_and_ids(tmp_path: Path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    counts = ["--train-people", "30", "--dev-people", "3", "--test-people", "5"]
    assert main(["synth", "--output", str(first), *counts]) == 0
    # The same seed would draw exactly the same people; --avoid makes every one of them new.
    assert main(["synth", "--output", str(second), *counts, "--id-prefix", "fresh", "--avoid", str(first)]) == 0
    capsys.readouterr()
    assert len(_titles(second)) == 38 and not _titles(first) & _titles(second)
    ids = [json.loads(line)["_id"] for line in (second / "corpus.jsonl").read_text().splitlines()]
    assert all(i.startswith("fresh-") for i in ids)
    assert not set(ids) & {json.loads(line)["_id"] for line in (first / "corpus.jsonl").read_text().splitlines()}
    manifest = json.loads((second / "synth.json").read_text())
    assert manifest["avoided_names"] == 38 and manifest["config"]["id_prefix"] == "fresh"
    # The held-out phrasings do not depend on the seed or the prefix: test stays unseen for both.
    assert manifest["held_out_for_test"] == json.loads((first / "synth.json").read_text())["held_out_for_test"]


def test_bad_prefix_or_avoid_folder_is_refused_before_writing(tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["synth", "--output", str(out), "--id-prefix", "no spaces"]) != 0
    assert "id_prefix" in capsys.readouterr().err
    assert main(["synth", "--output", str(out), "--avoid", str(tmp_path / "absent")]) != 0
    assert str(tmp_path / "absent" / "corpus.jsonl") in capsys.readouterr().err
    first = tmp_path / "first"
    assert main(["synth", "--output", str(first), "--train-people", "3", "--dev-people", "0",
                 "--test-people", "0"]) == 0
    capsys.readouterr()
    assert main(["synth", "--output", str(out), "--avoid", str(first)]) != 0  # both "synth-…": ids would collide
    assert "--id-prefix synth" in capsys.readouterr().err
    assert not out.exists()
