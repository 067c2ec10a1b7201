"""Benchmarks that expose gradient *composition*: many subjects with one fact each, of many relations.

At serving time the top-k passages' gradients are summed. When the top-k holds the asked
subject's fact *and* facts of the same relation about other subjects, the sum mixes them and the
model must bind the answer to the asked name. `regrad synth --relations MODE` writes two
benchmarks in `regrad synth`'s format (so `regrad augment --dataset synth`, `regrad encode` and
`regrad evaluate` read them unchanged) that put exactly that in the top-k:

    corpus.jsonl        one passage per subject: {"_id", "title" (the subject's name), "text", "split"}
    train.jsonl dev.jsonl test.jsonl
                        {"id", "question", "answers", "relation", "attribute" (= relation), "entity",
                         "passage", "group"} (+ "cluster", "shared_name" in composition)
    synth.json          config, the relations of each split, the unused train phrasings, counts

`novel` (`--relations novel`): every subject (an invented person or organisation) has exactly one
fact, one sentence, one passage titled with its name. The 46 relations of
`offline_tools/benchmarks/synth_relation_table.py` are in three fixed groups: `train` subjects have the 28
train relations, `dev` subjects the 6 dev relations, `test` subjects the 12 test relations, so dev
and test ask relations (and phrasings) never seen in training. Many subjects share each relation
(its phrasings taken in turn), so for a question BM25 ranks the asked passage first (its name) and
then other subjects' passages of the same relation (the relation's words): k−1 same-relation
distractors for any k up to the subjects per relation.

`composition` (`--relations composition`): the same groups (train relations for `train`, meant for
meta-training with distractors; dev relations for `dev`; test relations for `test`, which is then
both novel-relation and composition), but subjects come in *clusters* of `cluster_size` (≥ 5, so
k = 1, 3, 5 can be reported), one relation per cluster, values distinct within it. All passages of
a relation in a split are stated in one phrasing, so whichever same-relation passages BM25 ranks
next are stated in the same words as the asked one. Every other cluster is `shared_name`:
relatives sharing a surname ("Tomas Ashford", "Elena Ashford", ...) or organisations sharing a
brand word ("Velamora Glassworks", "Velamora Fleet", ...), where BM25 barely separates the
passages and only binding tells them apart; the rest are plain (different names). A question about
a shared-name cluster member retrieves its own cluster in the top `cluster_size`; a plain one
retrieves same-relation passages of its split.

Every name word is used by one subject only (except the shared surname or brand of a cluster, and
an organisation's kind, which its relation's subjects share), no name word is a word of any
phrasing, and no value contains a name or kind word: a shared word would pull in a passage of
another relation. Same seed, same files (words are compared as the tantivy analyzer stems them).

    regrad synth --relations composition --output artifacts/synth-comp
    regrad index --corpus artifacts/synth-comp/corpus.jsonl --index artifacts/synth-comp/index
    regrad augment --dataset synth --data-path artifacts/synth-comp --split test --index artifacts/synth-comp/index
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from offline_tools.benchmarks.synth_facts import NAME_STYLES, fill_template, place, write_jsonl
from offline_tools.benchmarks.synth_relation_table import (
    DEV_RELATIONS_2,
    EXTRA_TRAIN_RELATIONS,
    EXTRA_TRAIN_RELATIONS_2,
    EXTRA_TRAIN_RELATIONS_3,
    EXTRA_TRAIN_RELATIONS_4,
    GROUPS,
    ORG_KINDS,
    RELATIONS,
    Relation,
)

__all__ = ["RelationsConfig", "BenchmarkTooLarge", "DEFAULT_COUNTS", "phrasings", "generate_relations",
           "write_relations_benchmark"]

# mode -> split -> subjects per relation (novel) or clusters per relation (composition)
DEFAULT_COUNTS: dict[str, dict[str, int]] = {
    "novel": {"train": 30, "dev": 10, "test": 10},
    "composition": {"train": 6, "dev": 2, "test": 4},
}
_MAX_CLUSTER = len(ORG_KINDS)  # a brand cluster's members differ by kind


@dataclass
class RelationsConfig:
    """What to write. The same config always gives the same files.

    Args:
        mode: `novel` (subjects with one fact each) or `composition` (clusters of same-relation subjects).
        train_per_relation, dev_per_relation, test_per_relation: subjects (novel) or clusters (composition)
            per relation of each split; None: `DEFAULT_COUNTS[mode]`.
        cluster_size: subjects per cluster (composition).
        seed: random seed.
        id_prefix: ids are `<prefix>-<00042>-<relation>`; None: the mode's name.
        extra_train: write `EXTRA_TRAIN_RELATIONS` instead of the 46: training questions only (no dev or
            test split), values of the shapes the training relations lack (multi-digit counts, codes).
        extra_set: with `extra_train`, which set: 1 (`EXTRA_TRAIN_RELATIONS`), 2, 3 or 4 (`EXTRA_TRAIN_RELATIONS_2`,
            `_3`, `_4`).
        dev_set: 1, the six dev relations; 2, `DEV_RELATIONS_2` (the test's kinds of value, never trained on):
            then a dev split only (no train or test questions).
    """

    mode: Literal["novel", "composition"] = "novel"
    train_per_relation: int | None = None
    dev_per_relation: int | None = None
    test_per_relation: int | None = None
    cluster_size: int = 5
    seed: int = 0
    id_prefix: str | None = None
    extra_train: bool = False
    extra_set: int = 1
    dev_set: int = 1

    def __post_init__(self) -> None:
        if self.mode not in DEFAULT_COUNTS:
            raise ValueError(f"`mode` must be one of {sorted(DEFAULT_COUNTS)}, got {self.mode!r}")
        for split, default in DEFAULT_COUNTS[self.mode].items():
            name = f"{split}_per_relation"
            if getattr(self, name) is None:
                setattr(self, name, default)
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be ≥ 0, got {getattr(self, name)}")
        if self.mode == "composition" and not 2 <= self.cluster_size <= _MAX_CLUSTER:
            raise ValueError(f"`cluster_size` must be between 2 and {_MAX_CLUSTER} (the kinds a brand cluster "
                             f"can take), got {self.cluster_size}")
        if self.extra_set not in EXTRA_SETS:
            raise ValueError(f"`extra_set` must be one of {sorted(EXTRA_SETS)}, got {self.extra_set!r}")
        if self.extra_set != 1 and not self.extra_train:
            raise ValueError(f"`extra_set` {self.extra_set} names extra relations: set `extra_train` too")
        if self.dev_set not in DEV_SETS:
            raise ValueError(f"`dev_set` must be one of {sorted(DEV_SETS)}, got {self.dev_set!r}")
        if self.dev_set != 1 and self.extra_train:
            raise ValueError("`dev_set` 2 writes a dev split only and `extra_train` a train split only: choose one")
        self.id_prefix = self.id_prefix or self.mode
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.id_prefix):
            raise ValueError(f"`id_prefix` must be letters, digits or _, got {self.id_prefix!r}")

    def per_relation(self, split: str) -> int:
        return getattr(self, f"{split}_per_relation")

    def groups(self) -> dict[str, tuple[Relation, ...]]:
        """The relations of each split: the benchmark's three groups, or the extra ones for train alone."""
        if self.extra_train:
            return {"train": EXTRA_SETS[self.extra_set], "dev": (), "test": ()}
        if self.dev_set != 1:
            return {"train": (), "dev": DEV_SETS[self.dev_set], "test": ()}
        return GROUPS

    def avoided_words(self) -> str:
        """The phrasings no subject's name may share a word with: the 46's, and every extra set up to the one
        written (set 1's words alone for set 1, so that its files stay as they were written); for the second dev
        set, the extra sets that existed when it was written (1-3: its files do not change with later sets)."""
        if self.dev_set != 1:
            return _phrasing_words(RELATIONS + tuple(r for n in sorted(EXTRA_SETS) if n <= _SETS_BEFORE_DEV_2
                                                     for r in EXTRA_SETS[n]) + DEV_SETS[self.dev_set])
        if not self.extra_train:
            return _PHRASINGS
        return _phrasing_words(RELATIONS + tuple(r for n in sorted(EXTRA_SETS) if n <= self.extra_set
                                                 for r in EXTRA_SETS[n]))


def phrasings(relation: Relation) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(statements, questions) its subjects are written in: a train relation's last ones are kept back."""
    if relation.group == "train":
        return relation.statements[:-1], relation.questions[:-1]
    return relation.statements, relation.questions


# ---------------------------------------------------------------- names whose words are new
_FIRST_PARTS = tuple(tuple(sorted({part for style in NAME_STYLES.values() for part in style[i]})) for i in (0, 1))
_SURNAME_PARTS = tuple(tuple(sorted({part for style in NAME_STYLES.values() for part in style[i]})) for i in (2, 3))


def _phrasing_words(relations: Iterable[Relation]) -> str:
    return re.sub(r"\{\w+\}", " ", " ".join(t for r in relations for t in r.statements + r.questions))


_PHRASINGS = _phrasing_words(RELATIONS)
EXTRA_SETS: dict[int, tuple[Relation, ...]] = {1: EXTRA_TRAIN_RELATIONS, 2: EXTRA_TRAIN_RELATIONS_2,
                                               3: EXTRA_TRAIN_RELATIONS_3, 4: EXTRA_TRAIN_RELATIONS_4}
DEV_SETS: dict[int, tuple[Relation, ...]] = {1: GROUPS["dev"], 2: DEV_RELATIONS_2}
_SETS_BEFORE_DEV_2 = 3   # the extra sets whose words the second dev set's names avoid


@functools.cache
def _analyzer():
    from retrieval.tantivy_backend import english_analyzer  # tantivy is loaded only to generate

    return english_analyzer()


def _words(text: str) -> set[str]:
    """The terms of `text` as the BM25 index sees them: "Merry" and "Merri", "Ashness" and "Ashes" collide."""
    return set(_analyzer().analyze(text))


class BenchmarkTooLarge(ValueError):
    """The invented names or values ran out before every subject had one (too many subjects, or too many
    names avoided). Raised before any file is written."""


class _Names:
    """Hands out subject names and values so that no word of a name appears in another subject's passage.

    First names and surnames mix the syllables of all of synth.py's naming styles (about 3,000 of each),
    enough for every subject to have words of its own; a brand is an invented place-like word.
    """

    def __init__(self, rng: random.Random, avoid_names: Iterable[str], phrasings: str = _PHRASINGS) -> None:
        self.rng = rng
        self.avoided = set(avoid_names)
        self.name_words: set[str] = set()   # words of subjects' names (kind words aside)
        self.kind_words = _words(" ".join(ORG_KINDS))  # in no value and in no other part of a name
        # never in a name: the words of values, kinds, and phrasings ("Bear" would match "What name does ... bear?")
        self.value_words: set[str] = self.kind_words | _words(phrasings)

    def _fresh(self, make) -> str:
        for _ in range(10_000):
            word = make()
            if not _words(word) & (self.name_words | self.value_words):
                self.name_words |= _words(word)
                return word
        raise BenchmarkTooLarge("ran out of fresh name words; ask for fewer subjects")

    def first_name(self) -> str:
        return self._fresh(lambda: self.rng.choice(_FIRST_PARTS[0]) + self.rng.choice(_FIRST_PARTS[1]))

    def surname(self) -> str:
        return self._fresh(lambda: self.rng.choice(_SURNAME_PARTS[0]) + self.rng.choice(_SURNAME_PARTS[1]))

    def brand(self) -> str:
        return self._fresh(lambda: place(self.rng))

    def subject(self, relation: Relation, shared: str | None = None, kind: str | None = None) -> str:
        """A new subject of `relation`; `shared`: the cluster's surname or brand, `kind`: an org's kind."""
        for _ in range(1000):
            if relation.subject == "person":
                name = f"{self.first_name()} {shared or self.surname()}"
            else:
                name = f"{shared or self.brand()} {kind or relation.org_kind}"
            if name not in self.avoided:
                return name
        raise BenchmarkTooLarge(f"every name drawn for {relation.key} is avoided; give fewer --avoid folders or "
                                "fewer subjects")

    def value(self, relation: Relation, distinct_from: set[str], prefer_not: set[str]) -> str:
        """A value with no name word, not in `distinct_from`, and if it can be, not in `prefer_not`."""
        chosen = None
        for _ in range(200):
            value = relation.draw(self.rng)
            if _words(value) & (self.name_words | self.kind_words) or value in distinct_from:
                continue
            chosen = value
            if value not in prefer_not:
                break
        if chosen is None:
            raise BenchmarkTooLarge(f"no value of {relation.key} left that differs from {sorted(distinct_from)}; "
                                    "ask for smaller clusters")
        self.value_words |= _words(chosen)
        return chosen


# ---------------------------------------------------------------- generation
def generate_relations(config: RelationsConfig,
                       avoid_names: Iterable[str] = ()) -> tuple[list[dict], dict[str, list[dict]]]:
    """The corpus (one passage per subject) and the questions of each split (train, dev, test)."""
    rng = random.Random(config.seed)
    groups = config.groups()
    # names avoid every phrasing a subject's passage could be matched by: the 46's, and the extras' when written
    names = _Names(rng, avoid_names, config.avoided_words())
    corpus: list[dict] = []
    questions: dict[str, list[dict]] = {split: [] for split in groups}
    clusters = 0
    for split, relations in groups.items():
        for relation in relations:
            statements, asks = phrasings(relation)
            if config.mode == "novel":  # one group of subjects, the phrasings taken in turn: a phrasing
                first = rng.randrange(len(statements))  # used by one passage only would make its words rare
                groups = [(None, [names.subject(relation)], statements[(first + i) % len(statements)])
                          for i in range(config.per_relation(split))]
            else:  # clusters, shared-name and plain in turn, all in one phrasing: whichever same-relation
                statement = rng.choice(statements)  # passages BM25 ranks next are stated in the same words
                groups = [_cluster(names, relation, c % 2 == 0, config.cluster_size, statement)
                          for c in range(config.per_relation(split))]
            used_values: set[str] = set()  # distinct within a relation's split where the values allow
            for shared, subjects, statement in groups:
                cluster_values: set[str] = set()  # distinct within a composition cluster, always
                for name in subjects:
                    value = names.value(relation, cluster_values, used_values)
                    cluster_values.add(value)
                    used_values.add(value)
                    entity = f"{config.id_prefix}-{len(corpus):05d}"
                    passage_id = f"{entity}-{relation.key}"
                    text = fill_template(statement, name, value)
                    corpus.append({"_id": passage_id, "title": name, "text": text, "split": split})
                    row = {"id": passage_id, "question": fill_template(rng.choice(asks), name, value),
                           "answers": relation.aliases(value), "relation": relation.key,
                           "attribute": relation.key, "entity": entity, "passage": passage_id, "group": split}
                    if config.mode == "composition":
                        row |= {"cluster": f"{config.id_prefix}-c{clusters:04d}", "shared_name": shared is not None}
                    questions[split].append(row)
                clusters += 1
    for rows in questions.values():
        rng.shuffle(rows)
    return corpus, questions


def _cluster(names: _Names, relation: Relation, shared: bool, size: int,
             statement: str) -> tuple[str | None, list[str], str]:
    """(shared surname or brand, or None; the subjects' names; the cluster's one statement phrasing)."""
    if not shared:
        return None, [names.subject(relation) for _ in range(size)], statement
    word = names.surname() if relation.subject == "person" else names.brand()
    if relation.subject == "person":
        return word, [names.subject(relation, shared=word) for _ in range(size)], statement
    others = [kind for kind in ORG_KINDS if kind != relation.org_kind]  # its own kind and others', all different
    kinds = [relation.org_kind, *names.rng.sample(others, size - 1)]
    return word, [names.subject(relation, shared=word, kind=kind) for kind in kinds], statement


def write_relations_benchmark(output: str | os.PathLike, config: RelationsConfig,
                              avoid_names: Iterable[str] = ()) -> dict:
    """Write corpus.jsonl, {train,dev,test}.jsonl and synth.json into `output`; returns synth.json's content.

    Example:
        write_relations_benchmark("artifacts/synth-comp", RelationsConfig(mode="composition"))
    """
    avoid_names = set(avoid_names)
    corpus, questions = generate_relations(config, avoid_names)  # raises before anything is written
    groups = config.groups()
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "corpus.jsonl", corpus)
    for split, rows in questions.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    manifest = {
        "relations_mode": config.mode,
        "config": {key: value for key, value in asdict(config).items()  # the 46's synth.json as it always was
                   if not (key == "extra_train" and not value or key in ("extra_set", "dev_set") and value == 1)},
        "avoided_names": len(avoid_names),
        "relations": {split: [r.key for r in relations] for split, relations in groups.items()},
        "subject_kind": {r.key: r.subject for relations in groups.values() for r in relations},
        "unused_train_phrasings": {r.key: {"statement": r.statements[-1], "question": r.questions[-1]}
                                   for r in groups["train"]},
        "passages": len(corpus),
        "questions": {split: len(rows) for split, rows in questions.items()},
    }
    if config.mode == "composition":
        manifest["clusters"] = {split: len({q["cluster"] for q in rows}) for split, rows in questions.items()}
        manifest["shared_name_questions"] = {split: sum(q["shared_name"] for q in rows)
                                             for split, rows in questions.items()}
    (folder / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
