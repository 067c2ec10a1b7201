"""Service fixtures: a model-free test double of the engine, and the real stack for integration tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import uvicorn

from engine import Answer, Document, DocumentsResult, PassageHit, Question, StageTimings
from engine.errors import DocumentConflictError
from engine.modes import mode_spec
from retrieval.errors import BackendUnavailableError


class FakeEngine:
    """TEST DOUBLE of `engine.Engine`: no model; answers `<mode>:<question>`. It offers the static
    scheduler's interface (`answer_outcomes`), so apps built on it use `scheduler="static"`; the
    continuous scheduler needs a model and is tested on the real engine.

    `retriever_down = True` makes every retrieval-mode request fail as an unreachable Elasticsearch
    would (closed_book keeps working), so tests can take the backend down and bring it back.
    """

    fingerprint = "f" * 64

    def __init__(self) -> None:
        self.retriever_down = False
        self.down_for_batches = 0  # > 0: the next N batches fail as if the retriever were down
        self.retry_after_s = 2.0
        self.batch_sizes: list[int] = []
        self.documents: dict[str, Document] = {}
        self.closed = False
        self.thread_ids: set[int] = set()
        self.questions: list[Question] = []   # every question asked, in order

    def answer_outcomes(self, requests: Sequence[Question]) -> list:
        self.thread_ids.add(threading.get_ident())
        self.batch_sizes.append(len(requests))
        self.questions.extend(requests)
        down = self.retriever_down or self.down_for_batches > 0
        self.down_for_batches = max(0, self.down_for_batches - 1)
        outcomes: list = []
        for request in requests:
            spec = mode_spec(request.mode)
            if down and spec.retrieve:
                outcomes.append(
                    BackendUnavailableError("http://fake-es:9200", "connection refused", self.retry_after_s)
                )
                continue
            gradient = "stored" if spec.gradients else None
            if not spec.retrieve:
                hits, texts = [], []
            elif request.passages is not None:  # the caller's passages, instead of retrieval
                hits = [PassageHit(id=g.id or f"hash{i}", title=g.title, score=g.score or 0.0,
                                   gradient="computed" if gradient else None) for i, g in enumerate(request.passages)]
                texts = [g.text for g in request.passages]
            else:
                hits = [PassageHit(id=f"p{i}", title=f"T{i}", score=1.0 / (i + 1), gradient=gradient)
                        for i in range(request.top_k)]
                texts = [f"text {i}" for i in range(request.top_k)]
            outcomes.append(
                Answer(
                    answer=f"{request.mode}:{request.question}",
                    mode=request.mode,
                    passages=hits,
                    timings_ms=StageTimings(),
                    learner=self.fingerprint,
                    composition=str(request.composition) if request.composition and spec.gradients else None,
                    passage_texts=texts,
                )
            )
        return outcomes

    def add_documents(self, documents: Sequence[Document]) -> DocumentsResult:
        ids = [d.id or f"auto-{len(d.text)}" for d in documents]
        conflicts = [i for i, d in zip(ids, documents, strict=True) if i in self.documents and
                     self.documents[i].text != d.text]
        if conflicts:
            raise DocumentConflictError(conflicts)
        new = [i for i in dict.fromkeys(ids) if i not in self.documents]
        self.documents.update(zip(ids, documents, strict=True))
        return DocumentsResult(ids=ids, added=len(new), existing=len(set(ids)) - len(new),
                                 gradients_stored=len(new), learner=self.fingerprint, timings_ms={"total": 0.0})

    def readiness(self) -> dict[str, str]:
        return {"model": "ok", "retriever": "BackendUnavailableError: down" if self.retriever_down else "ok",
                "store": "ok"}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
