"""`regrad synth --relations`: 46 relations in disjoint groups, one fact per subject, clusters that share a
name, and a real BM25 index that puts same-relation facts about other subjects right after the asked one."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

import cli.main as cli
from offline_tools.benchmarks.synth import fill_template
from offline_tools.benchmarks.synth_relation_table import (
    DEV_RELATIONS,
    DEV_RELATIONS_2,
    EXTRA_TRAIN_RELATIONS,
    EXTRA_TRAIN_RELATIONS_2,
    EXTRA_TRAIN_RELATIONS_3,
    EXTRA_TRAIN_RELATIONS_4,
    GROUPS,
    ORG_KINDS,
    RELATIONS,
    TEST_RELATIONS,
    TRAIN_RELATIONS,
)
from offline_tools.benchmarks.synth_relations import (
    EXTRA_SETS,
    RelationsConfig,
    _phrasing_words,
    generate_relations,
    phrasings,
    write_relations_benchmark,
)
from offline_tools.benchmarks.synth_varied import EXTRA_ATTRIBUTES
from offline_tools.datasets.augmented import read_augmented
from retrieval import Passage, RetrieverConfig, open_retriever
from retrieval.tantivy_backend import english_analyzer
from tests.offline_tools.test_synth import _statement_pattern


def _small(mode: str, seed: int = 0) -> RelationsConfig:
    per = {"novel": 8, "composition": 2}[mode]  # 8 subjects or 2 clusters of 5 per relation: k = 5 distractors
    return RelationsConfig(mode=mode, train_per_relation=per, dev_per_relation=per, test_per_relation=per, seed=seed)


def _terms(text: str) -> set[str]:
    """What the BM25 index sees of `text`: lowercased, stopwords dropped, stemmed ("founded" -> "found")."""
    return set(english_analyzer().analyze(re.sub(r"\{\w+\}", " ", text)))


def test_relation_groups_are_large_disjoint_and_new():
    assert len(RELATIONS) >= 40 and len(TEST_RELATIONS) >= 10 and len(DEV_RELATIONS) >= 5
    assert len(TRAIN_RELATIONS) > len(DEV_RELATIONS) + len(TEST_RELATIONS)
    keys = [r.key for r in RELATIONS]
    assert len(set(keys)) == len(keys)
    assert all(r.group == group for group, relations in GROUPS.items() for r in relations)
    old = {"birthplace", "birth_year", "occupation", "employer", "spouse", "residence"}
    assert not set(keys) & (old | {a.key for a in EXTRA_ATTRIBUTES})
    # several subject and value kinds: organisations too, and values of many drawers
    assert {r.subject for r in TEST_RELATIONS} == {"person", "org"}
    assert len({r.draw for r in RELATIONS}) >= 25


def test_no_phrasing_is_shared_across_groups_and_train_keeps_its_last_one_back():
    templates = {group: {t for r in relations for t in r.statements + r.questions}
                 for group, relations in GROUPS.items()}
    assert not templates["train"] & templates["dev"] and not templates["train"] & templates["test"]
    assert not templates["dev"] & templates["test"]
    for relation in RELATIONS:
        statements, questions = phrasings(relation)
        assert len(statements) >= 3 and len(questions) >= 3, relation.key
        if relation.group == "train":
            assert relation.statements[-1] not in statements and relation.questions[-1] not in questions
        else:
            assert statements == relation.statements


def test_each_relation_has_a_cue_of_its_own_and_each_org_relation_a_kind_of_its_own():
    rng = random.Random(0)
    for relation in RELATIONS:
        cue = _terms(relation.cue)
        for template in relation.statements + relation.questions:  # with a value: "Rowing Club" brings its cue
            assert cue <= _terms(fill_template(template, "Zed Quux", relation.draw(rng))), (relation.key, template)
        for other in RELATIONS:
            if other is not relation:
                assert not [t for t in other.statements + other.questions if cue & _terms(t)], (relation.key, other.key)
    assert len(ORG_KINDS) == len(set(ORG_KINDS)) == len([r for r in RELATIONS if r.subject == "org"])
    assert not _terms(" ".join(ORG_KINDS)) & _terms(" ".join(t for r in RELATIONS for t in r.statements + r.questions))


def test_same_seed_same_files_other_seed_other_subjects(tmp_path):
    for mode in ("novel", "composition"):
        first, second = write_relations_benchmark(tmp_path / "a", _small(mode)), write_relations_benchmark(
            tmp_path / "b", _small(mode))
        assert first == second and first["relations_mode"] == mode
        for name in ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "synth.json"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
        titles = {p["title"] for p in generate_relations(_small(mode))[0]}
        assert titles != {p["title"] for p in generate_relations(_small(mode, seed=1))[0]}


@pytest.mark.parametrize("mode", ["novel", "composition"])
def test_one_fact_per_subject_answered_by_its_passage_in_its_relations_words(mode):
    corpus, questions = generate_relations(_small(mode))
    by_id = {p["_id"]: p for p in corpus}
    titles = [p["title"] for p in corpus]
    assert len(titles) == len(set(titles))  # one passage, one fact per subject
    cues = {r.key: _terms(r.cue) for r in RELATIONS}
    for split, rows in questions.items():
        assert {q["relation"] for q in rows} == {r.key for r in GROUPS[split]}
        assert Counter(q["relation"] for q in rows) == {r.key: len(rows) // len(GROUPS[split]) for r in GROUPS[split]}
        relations = {r.key: r for r in GROUPS[split]}
        for q in rows:
            passage = by_id[q["passage"]]
            assert q["group"] == passage["split"] == split and q["attribute"] == q["relation"]
            assert passage["title"] in passage["text"] and passage["title"] in q["question"]
            assert any(answer in passage["text"] for answer in q["answers"]), (q, passage)
            assert cues[q["relation"]] <= _terms(passage["text"]) & _terms(q["question"])
            statements, asks = phrasings(relations[q["relation"]])
            assert any(_statement_pattern(t).fullmatch(passage["text"]) for t in statements), passage["text"]
            assert any(_statement_pattern(t).fullmatch(q["question"]) for t in asks), q["question"]


def test_composition_clusters_share_a_relation_a_phrasing_and_sometimes_a_name_never_a_value():
    corpus, questions = generate_relations(_small("composition"))
    by_id = {p["_id"]: p for p in corpus}
    clusters: dict[str, list[dict]] = {}
    for q in (q for rows in questions.values() for q in rows):
        clusters.setdefault(q["cluster"], []).append(q)
    assert len(clusters) == 2 * len(RELATIONS)
    for members in clusters.values():
        assert len(members) == 5 and len({q["relation"] for q in members}) == 1
        assert len({q["answers"][0] for q in members}) == 5                     # distinct values
        texts = [by_id[q["passage"]]["text"] for q in members]
        relation = next(r for r in RELATIONS if r.key == members[0]["relation"])
        assert any(all(_statement_pattern(t).fullmatch(text) for text in texts) for t in phrasings(relation)[0])
        names = [by_id[q["passage"]]["title"].split() for q in members]
        shared = {w for w in names[0] if all(w in n for n in names)}
        if not members[0]["shared_name"]:  # plain: organisations share their relation's kind, people nothing
            assert shared == ({relation.org_kind} if relation.subject == "org" else set())
        elif relation.subject == "person":  # relatives: a surname and nothing else
            assert shared == {names[0][-1]} and len({n[0] for n in names}) == 5
        else:  # one brand, five kinds
            assert shared == {names[0][0]} and len({n[-1] for n in names}) == 5
    assert Counter(q["shared_name"] for rows in questions.values() for q in rows) == {True: 230, False: 230}


def _top_k(corpus: list[dict], questions: list[dict], k: int, tmp_path: Path) -> list[list[str]]:
    retriever = open_retriever(RetrieverConfig(index=str(tmp_path / "index"), backend="tantivy"))
    try:
        retriever.add(Passage(p["_id"], p["title"], p["text"]) for p in corpus)
        return [[hit.id for hit in hits] for hits in retriever.search_many([q["question"] for q in questions], k=k)]
    finally:
        retriever.close()


@pytest.mark.parametrize("mode", ["novel", "composition"])
def test_bm25_ranks_the_asked_passage_first_then_same_relation_facts_about_others(mode, tmp_path):
    corpus, questions = generate_relations(_small(mode))
    relation_of = {p["_id"]: p["_id"].rsplit("-", 1)[-1] for p in corpus}
    asked = questions["test"] + questions["dev"]
    ok = [ids[0] == q["passage"] and len(ids) == 3 and all(relation_of[i] == q["relation"] for i in ids)
          for q, ids in zip(asked, _top_k(corpus, asked, 3, tmp_path))]
    assert sum(ok) >= 0.9 * len(asked), f"{sum(ok)} of {len(asked)}"
    if mode == "composition":  # a shared-name question's top 5 is its own cluster: only binding tells them apart
        shared = [q for q in questions["test"] if q["shared_name"]]
        cluster_of = {q["passage"]: q["cluster"] for q in questions["test"]}
        top5 = _top_k(corpus, shared, 5, tmp_path)
        own = [all(cluster_of.get(i) == q["cluster"] for i in ids) for q, ids in zip(shared, top5)]
        assert sum(own) >= 0.9 * len(shared), f"{sum(own)} of {len(shared)}"


def _run(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(cli, "COMMANDS", ["synth", "index", "augment"])
    return cli.main(argv)


def test_cli_writes_a_composition_set_that_index_and_augment_read(tmp_path, monkeypatch, capsys):
    out, index, aug = tmp_path / "comp", tmp_path / "index", tmp_path / "test.jsonl"
    assert _run(monkeypatch, ["synth", "--relations", "composition", "--output", str(out), "--train-per-relation",
                              "1", "--dev-per-relation", "1", "--test-per-relation", "2", "--seed", "3"]) == 0
    assert {p.name for p in out.iterdir()} == {"corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "synth.json"}
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["relations"]["test"] == [r.key for r in TEST_RELATIONS]
    assert manifest["questions"] == {"train": 140, "dev": 30, "test": 120}
    assert manifest["clusters"]["test"] == 24 and manifest["config"]["id_prefix"] == "composition"
    assert _run(monkeypatch, ["index", "--corpus", str(out / "corpus.jsonl"), "--index", str(index),
                              "--no-progress"]) == 0
    assert _run(monkeypatch, ["augment", "--dataset", "synth", "--data-path", str(out), "--split", "test",
                              "--index", str(index), "--top-k", "3", "--output", str(aug), "--no-progress"]) == 0
    capsys.readouterr()
    records = list(read_augmented(aug))
    test_rows = {json.loads(line)["id"]: json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()}
    assert len(records) == 120 and all(len(r.passages) == 3 for r in records)
    assert sum(r.passages[0].id == test_rows[r.id]["passage"] for r in records) >= 110


def test_cli_refuses_mixed_options_before_writing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(out), "--train-people", "5"]) != 0
    assert "--train-people" in capsys.readouterr().err
    assert _run(monkeypatch, ["synth", "--output", str(out), "--test-per-relation", "5"]) != 0
    assert "--relations" in capsys.readouterr().err
    assert _run(monkeypatch, ["synth", "--relations", "composition", "--output", str(out), "--cluster-size", "12"]) != 0
    assert "cluster_size" in capsys.readouterr().err
    assert not out.exists()


def test_cli_says_when_avoided_names_leave_none_and_writes_nothing(tmp_path, monkeypatch, capsys):
    # Two full composition sets use up the brand words of the org relations (headquarters, ...).
    for seed, name in ((0, "a"), (1, "b")):
        assert _run(monkeypatch, ["synth", "--relations", "composition", "--output", str(tmp_path / name),
                                  "--seed", str(seed), "--id-prefix", name]) == 0
    out = tmp_path / "c"
    assert _run(monkeypatch, ["synth", "--relations", "composition", "--output", str(out), "--seed", "7",
                              "--id-prefix", "c", "--avoid", str(tmp_path / "a"), "--avoid", str(tmp_path / "b")]) == 2
    assert "is avoided; give fewer --avoid folders" in capsys.readouterr().err
    assert not out.exists()


def test_extra_training_relations_have_cues_of_their_own_and_the_value_shapes_the_28_lack():
    rng = random.Random(0)
    extras = EXTRA_TRAIN_RELATIONS + EXTRA_TRAIN_RELATIONS_2 + EXTRA_TRAIN_RELATIONS_3 + EXTRA_TRAIN_RELATIONS_4
    everything = RELATIONS + extras
    assert len({r.key for r in everything}) == len(everything)
    assert all(r.group == "train" and r not in GROUPS["train"] for r in extras)
    for relation in extras:
        cue = _terms(relation.cue)
        for template in relation.statements + relation.questions:
            assert cue <= _terms(fill_template(template, "Zed Quux", relation.draw(rng))), (relation.key, template)
        for other in everything:
            if other is not relation:
                assert not [t for t in other.statements + other.questions if cue & _terms(t)], (relation.key, other.key)
    values = [r.draw(rng) for r in EXTRA_TRAIN_RELATIONS for _ in range(50)]
    # the only "how many" of the 28 counts 2-19; these count in two to four digits
    assert sum(v.isdigit() and len(v) >= 2 for v in values) >= 0.6 * len(values)
    assert any(len(v) == 4 for v in values if v.isdigit())
    assert sum(r.questions[0].startswith("How many") for r in EXTRA_TRAIN_RELATIONS) >= 5


def test_the_second_extra_set_states_counts_before_their_noun_and_colours_with_a_material():
    rng = random.Random(1)
    counts = [r for r in EXTRA_TRAIN_RELATIONS_2 if r.questions[0].startswith("How many")]
    assert len(counts) >= 4
    for relation in counts:   # "N goats" stated, "How many goats" asked: the answer is the bare number
        noun = relation.questions[0].split()[2]
        assert all(re.search(r"\{value\} " + noun, t) for t in relation.statements), relation.key
        assert all(relation.draw(rng).isdigit() for _ in range(20))
    colours = [r for r in EXTRA_TRAIN_RELATIONS_2 if r.questions[0].startswith("What colour")]
    assert len(colours) >= 3 and any(re.search(r"\{value\} (wool|cotton)", t) for r in colours for t in r.statements)
    assert any(len(value) == 5 and value.isdigit() for value in (r.draw(rng) for r in EXTRA_TRAIN_RELATIONS_2))


def test_the_third_extra_set_has_initials_small_counts_a_date_a_code_and_two_word_values():
    rng = random.Random(2)
    draws = {r.key: [r.draw(rng) for _ in range(40)] for r in EXTRA_TRAIN_RELATIONS_3}
    names = [v for r in EXTRA_TRAIN_RELATIONS_3 if r.questions[0].startswith("Who") for v in draws[r.key]]
    assert len(names) >= 3 * 40 and all(re.fullmatch(r"[A-Z][a-z]+ [A-Z]\. [A-Z][a-z]+", v) for v in names)
    counts = [r for r in EXTRA_TRAIN_RELATIONS_3 if r.questions[0].startswith("How many")]
    assert len(counts) >= 2 and all(v.isdigit() and int(v) <= 15 for r in counts for v in draws[r.key])
    assert all(re.fullmatch(r"\d{1,2} [A-Z][a-z]+ \d{4}", v) for v in draws["diploma_date"])
    assert all(re.fullmatch(r"[A-Z]{2}-\d{3,4}", v) for v in draws["library_card"])
    assert all(len(v.split()) == 2 for key in ("tent_colour", "retirement") for v in draws[key])


def test_the_fourth_extra_set_has_objects_with_their_material_titles_vessels_and_three_digit_counts():
    """The kinds of value the second dev set misses most, in frames of their own: objects with their material
    (no other training relation draws one), titles, vessel names and three-digit counts; none of its cues is a
    word of a dev or test phrasing (the cue test above), and every object is stated with its article."""
    rng = random.Random(4)
    draws = {r.key: [r.draw(rng) for _ in range(40)] for r in EXTRA_TRAIN_RELATIONS_4}
    objects = [r for r in EXTRA_TRAIN_RELATIONS_4 if r.draw is DEV_RELATIONS_2[2].draw]
    earlier = TRAIN_RELATIONS + EXTRA_TRAIN_RELATIONS + EXTRA_TRAIN_RELATIONS_2 + EXTRA_TRAIN_RELATIONS_3
    assert len(objects) >= 3 and not [r for r in earlier if r.draw is DEV_RELATIONS_2[2].draw]
    assert all("{a_value}" in t for r in objects for t in r.statements)
    assert all(r.aliases("oak locket") == ["oak locket", "an oak locket"] for r in objects)
    titles = [v for r in EXTRA_TRAIN_RELATIONS_4 if r.key.endswith("_title") for v in draws[r.key]]
    assert len(titles) >= 80 and all(re.fullmatch(r"The [A-Z][a-z]+ of [A-Z][a-z]+", v) for v in titles)
    counts = [r for r in EXTRA_TRAIN_RELATIONS_4 if r.questions[0].startswith("How many")]
    assert len(counts) >= 2 and all(v.isdigit() and 20 <= int(v) <= 900 for r in counts for v in draws[r.key])
    assert sum(len(draws[r.key][0].split()) == 2 for r in EXTRA_TRAIN_RELATIONS_4 if r.key.endswith("_name")) >= 2


def test_the_second_dev_set_does_not_change_with_later_extra_sets(tmp_path):
    """Its names avoid the phrasings of the extra sets written before it (1-3), so its files, and the reads
    recorded on them, stay as they were when a later set is added."""
    config = RelationsConfig(mode="novel", dev_set=2, dev_per_relation=2)
    assert config.avoided_words() == _phrasing_words(
        RELATIONS + EXTRA_TRAIN_RELATIONS + EXTRA_TRAIN_RELATIONS_2 + EXTRA_TRAIN_RELATIONS_3 + DEV_RELATIONS_2)


@pytest.mark.parametrize("extra_set", sorted(EXTRA_SETS))
@pytest.mark.parametrize("mode", ["novel", "composition"])
def test_extra_training_relations_write_training_questions_only_answered_by_their_passages(mode, extra_set, tmp_path):
    config = RelationsConfig(mode=mode, train_per_relation={"novel": 6, "composition": 2}[mode], extra_train=True,
                             extra_set=extra_set, id_prefix="extra")
    manifest = write_relations_benchmark(tmp_path / mode, config)
    keys = [r.key for r in EXTRA_SETS[extra_set]]
    assert manifest["relations"] == {"train": keys, "dev": [], "test": []}
    assert manifest["questions"] == {"train": 6 * len(keys) if mode == "novel" else 10 * len(keys), "dev": 0, "test": 0}
    assert manifest["config"]["extra_train"] is True and set(manifest["unused_train_phrasings"]) == set(keys)
    # set 1's synth.json is as it was written before set 2 existed; set 2's names its set
    assert manifest["config"].get("extra_set") == (None if extra_set == 1 else extra_set)
    corpus = [json.loads(line) for line in (tmp_path / mode / "corpus.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / mode / "train.jsonl").read_text().splitlines()]
    assert not (tmp_path / mode / "dev.jsonl").read_text() and not (tmp_path / mode / "test.jsonl").read_text()
    by_id = {p["_id"]: p for p in corpus}
    relations = {r.key: r for r in EXTRA_SETS[extra_set]}
    for q in rows:
        passage = by_id[q["passage"]]
        assert passage["title"] in q["question"] and any(answer in passage["text"] for answer in q["answers"])
        statements, asks = phrasings(relations[q["relation"]])
        assert any(_statement_pattern(t).fullmatch(passage["text"]) for t in statements), passage["text"]
        assert any(_statement_pattern(t).fullmatch(q["question"]) for t in asks), q["question"]


def test_adding_an_extra_set_leaves_the_words_the_earlier_sets_names_avoid_as_they_were():
    # Names avoid set 1's phrasings alone when set 1 is written, so the same seed draws the same names and
    # run 13's mix stays reproducible byte for byte.
    words = {n: set(RelationsConfig(mode="composition", extra_train=True, extra_set=n).avoided_words().split())
             for n in EXTRA_SETS}
    plain = set(RelationsConfig(mode="composition").avoided_words().split())
    assert plain < words[1] < words[2] < words[3] < words[4]
    assert "sheep" in words[1] and "goats" not in words[1] and "goats" in words[2] and "ducks" not in words[2]
    assert "ducks" in words[3] and "attic" not in words[3] and "attic" in words[4]
    with pytest.raises(ValueError, match="extra_set"):
        RelationsConfig(mode="novel", extra_train=True, extra_set=5)
    with pytest.raises(ValueError, match="extra_train"):
        RelationsConfig(mode="novel", extra_set=2)


def test_the_46_relations_files_do_not_name_the_extra_option(tmp_path):
    manifest = write_relations_benchmark(tmp_path / "comp", _small("composition"))
    assert "extra_train" not in manifest["config"]   # synth.json as every earlier benchmark folder has it
    assert {q["relation"] for q in generate_relations(_small("composition"))[1]["train"]} == {
        r.key for r in TRAIN_RELATIONS}


def test_cli_refuses_the_extra_relations_where_they_do_not_apply(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert _run(monkeypatch, ["synth", "--output", str(out), "--extra-train-relations"]) != 0
    assert "--relations" in capsys.readouterr().err
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(out), "--extra-train-relations",
                              "--dev-per-relation", "3"]) != 0
    assert "training questions only" in capsys.readouterr().err
    assert not out.exists()
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(out), "--extra-train-relations",
                              "--train-per-relation", "2", "--id-prefix", "x"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == {"train": 2 * len(EXTRA_TRAIN_RELATIONS), "dev": 0,
                                                                "test": 0}
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(tmp_path / "two"),
                              "--extra-train-relations", "2", "--train-per-relation", "2", "--id-prefix", "y"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"]["train"] == 2 * len(EXTRA_TRAIN_RELATIONS_2)
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(tmp_path / "three"),
                              "--extra-train-relations", "3", "--train-per-relation", "2", "--id-prefix", "z"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"]["train"] == 2 * len(EXTRA_TRAIN_RELATIONS_3)
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(tmp_path / "four"),
                              "--extra-train-relations", "4", "--train-per-relation", "2", "--id-prefix", "w"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"]["train"] == 2 * len(EXTRA_TRAIN_RELATIONS_4)
    with pytest.raises(SystemExit):   # argparse's usage error, exit 2
        _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(tmp_path / "five"),
                           "--extra-train-relations", "5"])
    assert "invalid choice: 5" in capsys.readouterr().err and not (tmp_path / "five").exists()


def test_the_second_dev_set_has_cues_of_its_own_and_the_test_relations_kinds_of_value():
    """Eight dev relations never trained on: each with a cue no other relation's phrasings hold (and no other
    relation's cue in theirs), of the kinds of value the test relations have and the six dev ones lack."""
    rng = random.Random(0)
    extras = EXTRA_TRAIN_RELATIONS + EXTRA_TRAIN_RELATIONS_2 + EXTRA_TRAIN_RELATIONS_3 + EXTRA_TRAIN_RELATIONS_4
    everything = RELATIONS + extras + DEV_RELATIONS_2
    assert len({r.key for r in everything}) == len(everything) and len(DEV_RELATIONS_2) == 8
    assert all(r.group == "dev" and r.subject == "person" and r not in GROUPS["dev"] for r in DEV_RELATIONS_2)
    for relation in everything:
        cue = _terms(relation.cue)
        for other in DEV_RELATIONS_2 if relation not in DEV_RELATIONS_2 else everything:
            if other is not relation:
                assert not [t for t in other.statements + other.questions if cue & _terms(t)], (relation.key, other.key)
    for relation in DEV_RELATIONS_2:
        for template in relation.statements + relation.questions:
            assert _terms(relation.cue) <= _terms(fill_template(template, "Zed Quux", relation.draw(rng)))
    drawers = {r.draw for r in DEV_RELATIONS_2}
    # the test's kinds of value, none of which the six dev relations draw
    assert {r.draw for r in TEST_RELATIONS} & drawers and not {r.draw for r in DEV_RELATIONS} & drawers - {
        r.draw for r in TEST_RELATIONS}
    values = [r.draw(rng) for r in DEV_RELATIONS_2 for _ in range(40)]
    assert any(v.isdigit() and len(v) == 3 for v in values) and any(v.isdigit() and len(v) == 4 for v in values)
    assert sum(len(v.split()) >= 2 for v in values) >= len(values) // 4   # titles, boat names, objects


@pytest.mark.parametrize("mode", ["novel", "composition"])
def test_the_second_dev_set_writes_a_dev_split_only_that_bm25_ranks_as_the_first(mode, tmp_path):
    per = {"novel": 8, "composition": 2}[mode]
    config = RelationsConfig(mode=mode, dev_per_relation=per, dev_set=2, id_prefix="dev2")
    manifest = write_relations_benchmark(tmp_path / mode, config)
    assert manifest["relations"] == {"train": [], "dev": [r.key for r in DEV_RELATIONS_2], "test": []}
    questions_per_relation = {"novel": 8, "composition": 2 * 5}[mode]   # subjects, or clusters of 5
    assert manifest["questions"] == {"train": 0, "dev": questions_per_relation * len(DEV_RELATIONS_2), "test": 0}
    assert manifest["config"]["dev_set"] == 2
    assert "dev_set" not in write_relations_benchmark(tmp_path / "plain", _small(mode))["config"]   # as it was
    corpus, questions = generate_relations(config)
    by_id = {p["_id"]: p for p in corpus}
    for q in questions["dev"]:
        passage = by_id[q["passage"]]
        assert passage["title"] in q["question"] and any(answer in passage["text"] for answer in q["answers"])
    relation_of = {p["_id"]: p["_id"].rsplit("-", 1)[-1] for p in corpus}
    ok = [ids[0] == q["passage"] and all(relation_of[i] == q["relation"] for i in ids)
          for q, ids in zip(questions["dev"], _top_k(corpus, questions["dev"], 3, tmp_path / "index"))]
    assert sum(ok) >= 0.9 * len(ok), f"{sum(ok)} of {len(ok)}"
    with pytest.raises(ValueError, match="dev_set"):
        RelationsConfig(mode=mode, dev_set=3)
    with pytest.raises(ValueError, match="choose one"):
        RelationsConfig(mode=mode, dev_set=2, extra_train=True)


def test_cli_writes_the_second_dev_set_and_refuses_what_it_does_not_write(tmp_path, monkeypatch, capsys):
    out = tmp_path / "dev2"
    assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(out), "--dev-relations", "2",
                              "--dev-per-relation", "2", "--id-prefix", "d2"]) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == {"train": 0, "dev": 16, "test": 0}
    for extra in (["--test-per-relation", "2"], ["--extra-train-relations"], ["--train-per-relation", "1"]):
        assert _run(monkeypatch, ["synth", "--relations", "novel", "--output", str(tmp_path / "x"),
                                  "--dev-relations", "2", *extra]) != 0
        assert "writes a dev split only" in capsys.readouterr().err
    assert _run(monkeypatch, ["synth", "--output", str(tmp_path / "x"), "--dev-relations", "2"]) != 0
    assert "--relations" in capsys.readouterr().err and not (tmp_path / "x").exists()
