"""Answer types and choice letters are defined once (models/vocab.py): every layer that names them uses
that table, so adding a type there reaches the prompt, the engine, the API schema, the records and the
metrics alike."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from engine.types import Question
from models import vocab
from models.generate import ANSWER_TYPES as GENERATE_TYPES
from models.generate import LETTERS
from offline_tools.datasets.record import ANSWER_TYPES as RECORD_TYPES
from offline_tools.datasets.record import CHOICE_LETTERS as RECORD_LETTERS
from service.schemas import MAX_CHOICES, AnswerRequest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "offline_tools", "service", "engine", "models", "gradient_store", "retrieval")


def test_every_layer_uses_the_one_table() -> None:
    assert GENERATE_TYPES is vocab.ANSWER_TYPES and RECORD_TYPES is vocab.ANSWER_TYPES
    assert LETTERS is vocab.CHOICE_LETTERS and RECORD_LETTERS is vocab.CHOICE_LETTERS
    assert len(vocab.CHOICE_LETTERS) == MAX_CHOICES
    schema_types = get_args(AnswerRequest.model_fields["answer_type"].annotation)
    assert schema_types == vocab.ANSWER_TYPES


def test_the_engine_refuses_a_type_the_table_lacks() -> None:
    Question("q", answer_type="yes_no")
    try:
        Question("q", answer_type="essay")
    except ValueError as error:
        assert all(t in str(error) for t in vocab.ANSWER_TYPES)
    else:
        raise AssertionError("an unknown answer type was accepted")


def test_no_other_module_spells_the_vocabulary_out() -> None:
    spelled = re.compile(r"""["']short["'],\s*["']yes_no["'],\s*["']choice["']|["']ABCDE["']""")
    found = [str(p.relative_to(ROOT)) for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
             if p.name != "vocab.py" and spelled.search(p.read_text(encoding="utf-8"))]
    assert not found, f"the answer vocabulary is written out in {found}; import it from models/vocab.py"
