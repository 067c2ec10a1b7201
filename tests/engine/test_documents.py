"""`Engine.add_documents` on the real engine (tiny random learner, real tantivy index, real store):
idempotent per id, conflicts refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Document, DocumentConflictError
from engine.core import Engine, open_store
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    engine = Engine(tiny_learner, TantivyRetriever(tmp_path / "index"), open_store(tmp_path / "store", tiny_learner))
    yield engine
    engine.close()


def test_same_document_twice_is_added_once(engine):
    doc = Document(id="d1", title="Veltoria", text="Veltoria is an island nation. Its capital is Marrowick.")
    first = engine.add_documents([doc])
    again = engine.add_documents([Document(id="d1", title="Veltoria",
                                           text="Veltoria is an island   nation.\nIts capital is Marrowick.")])
    assert (first.added, first.existing, first.gradients_stored) == (1, 0, 1)
    assert (again.added, again.existing, again.gradients_stored) == (0, 1, 0)  # whitespace is not a change
    assert engine.retriever.count() == 1 and len(engine.store) == 1
    assert engine.store.fingerprint == engine.fingerprint == first.learner


def test_content_ids_are_derived_and_stable(engine):
    doc = Document(title="T", text="Some passage text.")
    first = engine.add_documents([doc, doc])  # the same content twice in one call
    again = engine.add_documents([doc])
    assert first.ids[0] == first.ids[1] == again.ids[0]
    assert (first.added, first.existing, again.added, again.existing) == (1, 0, 0, 1)


def test_changed_text_under_an_existing_id_is_refused_and_writes_nothing(engine):
    engine.add_documents([Document(id="d1", text="The capital is Marrowick.")])
    with pytest.raises(DocumentConflictError) as conflict:
        engine.add_documents([Document(id="d2", text="A new passage."),
                              Document(id="d1", text="The capital is Dunmere.")])
    assert conflict.value.ids == ["d1"]
    assert engine.retriever.count() == 1 and len(engine.store) == 1  # d2 was not added either
    assert [p.text for p in engine.retriever.get(["d1"])] == ["The capital is Marrowick."]


def test_indexed_document_without_a_gradient_gets_one(engine):
    engine.retriever.add([Passage("d1", "T", "Indexed only.")])
    result = engine.add_documents([Document(id="d1", title="T", text="Indexed only.")])
    assert (result.added, result.existing, result.gradients_stored) == (0, 1, 1)
    assert engine.store.contains("d1")
