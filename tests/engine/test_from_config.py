"""`Engine.from_config`: the learner, retriever and store built from an `EngineConfig` (what the
service's `Settings.engine_config()` and in-process evaluation hand it). Real bundled model."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import EngineConfig, Question
from engine.core import Engine
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever

pytestmark = pytest.mark.integration


def test_from_config_builds_a_working_engine_and_creates_the_store(tmp_path: Path):
    index = TantivyRetriever(tmp_path / "index")
    index.add([Passage("p1", "Veltoria", "Veltoria is an island nation. Its capital is Marrowick.")])
    index.close()
    config = EngineConfig(index=str(tmp_path / "index"), store=tmp_path / "store", device="cpu",
                          dtype="float32", write_back=True)  # no checkpoint: the preset, untrained
    engine = Engine.from_config(config)
    try:
        [answer] = engine.answer_batch([Question("What is the capital of Veltoria?", top_k=1, max_new_tokens=2)])
        assert [(p.id, p.gradient) for p in answer.passages] == [("p1", "computed")]
        assert engine.store.contains("p1")  # write_back: the miss was stored, in a store made for this learner
        assert engine.store.fingerprint == engine.fingerprint == answer.learner
        assert engine.readiness() == {"model": "ok", "retriever": "ok", "store": "ok"}
    finally:
        engine.close()
