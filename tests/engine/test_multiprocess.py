"""Two engine processes on one index and one store (as two server replicas on one host are): a document
added through either is retrieved, with its stored gradient, by the other, which opened both before;
adds from two replicas cannot split one id between two texts; another process's long write (a
`regrad encode` run) never stalls the model thread."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine.core as engine_module
from engine import Document, DocumentConflictError, Question
from engine.core import Engine, open_store
from gradient_store import GradientStore, StoreLockedError
from models import format_passage, passage_gradients
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

# The other process: the same tiny learner (same seed, same fingerprint), its own Engine on the same
# folders, opened once; then JSON commands on stdin, one per line.
OTHER = """
import json, runpy, sys
import engine.core as engine_module
from engine import Document, DocumentConflictError, Question
from engine.core import Engine, open_store
from gradient_store import GradientStore, StoreLockedError
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever
learner = runpy.run_path(sys.argv[3])["make_tiny_learner"]()
engine = Engine(learner, TantivyRetriever(sys.argv[1]), open_store(sys.argv[2], learner), missing_gradients="skip")
print(json.dumps({"ready": engine.fingerprint}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "answer":
        [answer] = engine.answer_batch([Question(cmd["question"], mode="regrad", top_k=1, max_new_tokens=1)])
        print(json.dumps([[p.id, p.gradient] for p in answer.passages]), flush=True)
    else:
        r = engine.add_documents([Document(**cmd["document"])])
        print(json.dumps([r.added, r.existing, r.gradients_stored]), flush=True)
engine.close()
"""

VELTORIA = {"id": "veltoria", "title": "Veltoria",
            "text": "Veltoria is an island nation in the Quell Sea. Its capital is Marrowick."}
ORNSKARD = {"id": "ornskard", "title": "Ornskard",
            "text": "Ornskard is a glacier valley. The Ornskard glacier feeds the river Tilvane."}


class OtherProcess:
    def __init__(self, index: Path, store: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", OTHER, str(index), str(store), str(CONFTEST)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.fingerprint = self._ask(None)["ready"]

    def _ask(self, cmd: dict | None):
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the other engine exited with {self.proc.wait(timeout=300)}"
        return json.loads(line)

    def answer(self, question: str) -> list[list]:
        return self._ask({"op": "answer", "question": question})

    def add(self, document: dict) -> list[int]:
        return self._ask({"op": "add", "document": document})

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=300) == 0


@pytest.fixture()
def engine(tiny_learner, tmp_path: Path):
    engine = Engine(tiny_learner, TantivyRetriever(tmp_path / "index"), open_store(tmp_path / "store", tiny_learner),
                    missing_gradients="skip")  # an unstored gradient shows as "missing", never computed
    engine.add_documents([Document(id="d0", title="Filler", text="A passage about nothing in particular.")])
    yield engine
    engine.close()


def _answer(engine: Engine, question: str) -> list[list]:
    [answer] = engine.answer_batch([Question(question, mode="regrad", top_k=1, max_new_tokens=1)])
    return [[p.id, p.gradient] for p in answer.passages]


def test_documents_added_through_one_process_are_served_by_the_other(engine, tiny_learner, tmp_path):
    other = OtherProcess(tmp_path / "index", tmp_path / "store")  # opened before either document exists
    try:
        assert other.fingerprint == engine.fingerprint
        question = "What is the capital of Veltoria?"
        assert other.answer(question) == []  # no passage matches yet

        engine.add_documents([Document(**VELTORIA)])
        assert other.answer(question) == [["veltoria", "stored"]]
        assert other.add(VELTORIA) == [0, 1, 0]  # already indexed and stored, by this process

        assert other.add(ORNSKARD) == [1, 0, 1]
        assert _answer(engine, "Which glacier feeds the river Tilvane?") == [["ornskard", "stored"]]
        written = engine.store.get(["ornskard"])["ornskard"]
        exact = passage_gradients(tiny_learner, [format_passage(ORNSKARD["title"], ORNSKARD["text"])])[0]
        assert float((written - exact).norm() / exact.norm()) < 1e-2  # the other's gradient, bf16-rounded
        assert len(engine.store) == 3 and engine.retriever.count() == 3
    finally:
        other.close()
    assert engine.store.verify().ok
    assert torch.isfinite(written).all()


def test_a_conflicting_add_by_another_replica_during_the_encode_is_refused(engine, tiny_learner, tmp_path,
                                                                           monkeypatch):
    other = Engine(tiny_learner, TantivyRetriever(tmp_path / "index"), open_store(tmp_path / "store", tiny_learner))
    theirs = {**VELTORIA, "text": "Veltoria is an island nation in the Quell Sea. Its capital is Dunmere."}
    real_gradients = engine_module.passage_gradients
    raced = []

    def gradients_while_the_other_adds(*args, **kwargs):
        if not raced:  # while this process encodes, the other replica adds the same id with other text
            raced.append("started")
            raced.append(other.add_documents([Document(**theirs)]))
        return real_gradients(*args, **kwargs)

    monkeypatch.setattr(engine_module, "passage_gradients", gradients_while_the_other_adds)
    try:
        with pytest.raises(DocumentConflictError) as conflict:
            engine.add_documents([Document(**VELTORIA)])
        assert conflict.value.ids == ["veltoria"] and raced[1].added == 1
        # Index and store agree: both hold the other replica's text.
        assert [p.text for p in engine.retriever.get(["veltoria"])] == [theirs["text"]]
        stored = engine.store.get(["veltoria"])["veltoria"]
        exact = real_gradients(tiny_learner, [format_passage(theirs["title"], theirs["text"])])[0]
        assert float((stored - exact).norm() / exact.norm()) < 1e-2
    finally:
        other.close()


def test_documents_wait_briefly_for_another_writer_then_fail_without_writing(engine):
    engine.store_lock_timeout_s = 0.1
    encode_run = GradientStore.open(engine.store.path)  # another process's writer, e.g. `regrad encode`
    try:
        with encode_run.writer(), pytest.raises(StoreLockedError):
            engine.add_documents([Document(**VELTORIA)])
        assert engine.retriever.get(["veltoria"]) == [] and "veltoria" not in engine.store
        assert engine.add_documents([Document(**VELTORIA)]).gradients_stored == 1  # once the lock is free
    finally:
        encode_run.close()


def test_write_back_skips_when_another_process_writes_the_store(engine, caplog):
    engine.missing_gradients, engine.write_back = "compute", True
    engine.retriever.add([Passage(VELTORIA["id"], VELTORIA["title"], VELTORIA["text"])])  # indexed, not stored
    question = "What is the capital of Veltoria?"
    encode_run = GradientStore.open(engine.store.path)
    try:
        with encode_run.writer(), caplog.at_level(logging.INFO, logger="regrad.engine"):
            assert _answer(engine, question) == [["veltoria", "computed"]]  # answered; not waiting for the lock
        assert "another process is writing the store" in caplog.text
        assert "veltoria" not in engine.store
        # the lock is free: kept in memory since, and written back now
        assert _answer(engine, question) == [["veltoria", "cached"]]
        assert "veltoria" in engine.store
    finally:
        encode_run.close()


def test_readiness_probes_the_store_without_counting_it(engine, monkeypatch):
    monkeypatch.setattr(GradientStore, "__len__", lambda self: pytest.fail("readiness counted every row"))
    assert engine.readiness()["store"] == "ok"
    engine.store.close()
    assert engine.readiness()["store"].startswith("StoreError")
