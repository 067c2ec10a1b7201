"""A controlled knowledge-injection benchmark: invented people, their facts, and questions on them.

Every person is made up (names, towns and organisations are built from syllables), so a model
cannot know a fact before it reads the person's passage: closed-book accuracy is ≈ 0 by
construction, and whatever ReGrad answers right came from the applied gradients.

    corpus.jsonl                 one passage per fact: {"_id", "title", "text", "split"}
    train.jsonl dev.jsonl test.jsonl   questions: {"id", "question", "answers", "attribute", "entity"}
    synth.json                   seed, counts, and the templates held out for test

Each person has 2-3 of six attributes (birthplace, birth year, occupation, employer, spouse,
residence), and each fact is its own one-sentence passage titled with the person's name, so a
question's top-3 BM25 passages are (nearly always) that person's facts: the applied gradients
hold the answer and the person's other facts, and the model must take the one asked. Each
attribute is written in one of several passage phrasings and asked in one of several question
phrasings. People are split into train / dev / test, and the *last* passage phrasing and the
*last* question phrasing of every attribute are used by test people only: test measures unseen
people stated and asked in unseen words. Same seed, same files.

    regrad synth --output artifacts/synth --seed 0
    regrad index --corpus artifacts/synth/corpus.jsonl --index artifacts/synth/index
    regrad augment --dataset synth --data-path artifacts/synth --split test --index artifacts/synth/index
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from offline_tools.benchmarks.synth_facts import (
    ATTRIBUTES,
    NAME_STYLES,
    Attribute,
    article,
    fill_template,
    organisation,
    person_name,
    place,
    write_jsonl,
)
from offline_tools.benchmarks.synth_varied import varied_attributes, varied_phrasings

# The facts' parts (synth_facts.py) are exported here too, beside the generator that uses them.
__all__ = ["SynthConfig", "ATTRIBUTES", "Attribute", "NAME_STYLES", "generate", "write_benchmark", "person_name",
           "place", "organisation", "article", "fill_template", "write_jsonl"]


# ---------------------------------------------------------------- generation
@dataclass
class SynthConfig:
    """How many people per split, and the seed. The same config always gives the same files."""

    train_people: int = 2000
    dev_people: int = 40
    test_people: int = 60
    seed: int = 0
    min_attributes: int = 2   # each person has min..max of the 6 attributes, one passage per fact
    max_attributes: int = 3
    id_prefix: str = "synth"  # ids are `<prefix>-<00042>-<attribute>`; another prefix can share an index
    varied: bool = False      # training-only people in many more phrasings and kinds of fact (synth_varied.py)
    more_phrasings: bool = False  # with `varied`: a second batch of training phrasings besides the first
    wide_dev: bool = False        # with `varied`: dev people in 10 unseen phrasings per attribute, not 2

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.id_prefix):
            raise ValueError(f"`id_prefix` must be letters, digits or _, got {self.id_prefix!r}")
        for name in ("train_people", "dev_people", "test_people"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be ≥ 0, got {getattr(self, name)}")
        if not 1 <= self.min_attributes <= self.max_attributes <= len(ATTRIBUTES):
            raise ValueError(f"need 1 <= `min_attributes` <= `max_attributes` <= {len(ATTRIBUTES)}, "
                             f"got {self.min_attributes} and {self.max_attributes}")
        if self.more_phrasings and not self.varied:
            raise ValueError("`more_phrasings` adds to a `varied` set's phrasings; set `varied` too")
        if self.wide_dev and not self.varied:
            raise ValueError("`wide_dev` widens a `varied` set's dev phrasings; set `varied` too")
        if self.varied and self.test_people:
            raise ValueError("a `varied` set has no test people (its phrasings are for training and its own "
                             f"dev split; the benchmark's test split is the test), got test_people={self.test_people}")


def generate(config: SynthConfig, avoid_names: Iterable[str] = ()) -> tuple[list[dict], dict[str, list[dict]]]:
    """The corpus (one passage per fact) and the questions of each split.

    `avoid_names`: names never given to a person here (another benchmark's people, so that a second
    training set shares an index with the first without two people of one name).
    """

    rng = random.Random(config.seed)
    splits = (("train", config.train_people), ("dev", config.dev_people), ("test", config.test_people))
    avoided = set(avoid_names)
    taken: set[str] = set()
    corpus: list[dict] = []
    questions: dict[str, list[dict]] = {split: [] for split, _ in splits}
    for split, count in splits:
        held_out = split == "test"
        for _ in range(count):
            name = person_name(rng)
            while name in taken or name in avoided:
                name = person_name(rng)
            taken.add(name)
            entity = f"{config.id_prefix}-{len(taken) - 1:05d}"
            kinds = varied_attributes(split) if config.varied else ATTRIBUTES
            facts = rng.sample(kinds, rng.randint(config.min_attributes, config.max_attributes))
            for attribute in facts:
                value = attribute.draw(rng)
                if config.varied:
                    statements, asks = varied_phrasings(attribute, split, more=config.more_phrasings,
                                                        wide=config.wide_dev)
                else:
                    statements = attribute.statements[-1:] if held_out else attribute.statements[:-1]
                    asks = attribute.questions[-1:] if held_out else attribute.questions[:-1]
                passage_id = f"{entity}-{attribute.key}"
                text = fill_template(rng.choice(statements), name, value)
                corpus.append({"_id": passage_id, "title": name, "text": text, "split": split})
                questions[split].append({
                    "id": passage_id,
                    "question": fill_template(rng.choice(asks), name, value),
                    "answers": attribute.aliases(value),
                    "attribute": attribute.key,
                    "entity": entity,
                    "passage": passage_id,
                })
    for split in questions:
        rng.shuffle(questions[split])
    return corpus, questions


def write_benchmark(output: str | os.PathLike, config: SynthConfig, avoid_names: Iterable[str] = ()) -> dict:
    """Write corpus.jsonl, {train,dev,test}.jsonl and synth.json into `output`; returns synth.json's content."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    avoid_names = set(avoid_names)
    corpus, questions = generate(config, avoid_names)
    write_jsonl(folder / "corpus.jsonl", corpus)
    for split, rows in questions.items():
        write_jsonl(folder / f"{split}.jsonl", rows)
    manifest = {
        "config": asdict(config),
        "avoided_names": len(avoid_names),
        "passages": len(corpus),
        "questions": {split: len(rows) for split, rows in questions.items()},
        "varied": config.varied,
        "held_out_for_test": {
            a.key: {"statement": a.statements[-1], "question": a.questions[-1]} for a in ATTRIBUTES
        },
        "phrasings_per_attribute": {"statements": len(ATTRIBUTES[0].statements),
                                    "questions": len(ATTRIBUTES[0].questions)},
    }
    (folder / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
