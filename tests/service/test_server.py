"""The real service over HTTP: uvicorn on 127.0.0.1, the bundled model, a tantivy index over 50
HotpotQA (IRCoT) paragraphs and a real gradient store.

Budget: one server for the module; answers are a few tokens long and concurrent requests share
batches, so the whole file is a few dozen short generations.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Question
from engine.core import Engine
from gradient_store import GradientStore
from models import format_passage, passage_gradients
from retrieval import read_corpus
from retrieval.elasticsearch_backend import ElasticsearchRetriever
from retrieval.tantivy_backend import TantivyRetriever
from service.app import create_app
from service.settings import Settings

from .conftest import free_port, running_server

pytestmark = pytest.mark.integration

N_PASSAGES = 50
TOKENS = 4  # answer length in these tests: enough to see different answers, cheap on 2 cores


@pytest.fixture(scope="module")
def corpus(shared_data):
    """The first 50 paragraphs of the IRCoT HotpotQA file, and the questions they belong to."""
    path = shared_data / "hotpotqa" / "ircot_hotpotqa_dev_subsampled.jsonl"
    passages = list(itertools.islice(read_corpus(path), N_PASSAGES))
    with open(path, encoding="utf-8") as handle:
        questions = [json.loads(line)["question_text"] for line in itertools.islice(handle, 5)]
    return passages, questions


@pytest.fixture(scope="module")
def server(real_learner, corpus, tmp_path_factory):
    """uvicorn in a thread serving the real engine; the store holds the gradients of each question's
    top passage and the first question's top 2 (deeper ones are computed on demand). Encoding is the
    costly part on CPU (~1 s per passage), so only these few are stored."""
    passages, questions = corpus
    root = tmp_path_factory.mktemp("service")
    retriever = TantivyRetriever(root / "index")
    retriever.add(passages)
    store = GradientStore.create(root / "store", layout=real_learner.layout.to_json(),
                                 fingerprint=real_learner.fingerprint)
    tops = retriever.search(questions[0], k=2) + [retriever.search(q, k=1)[0] for q in questions[1:4]]
    stored = list({p.id: p for p in tops}.values())
    store.append([p.id for p in stored], passage_gradients(real_learner, [format_passage(p.title, p.text)
                                                                          for p in stored]))
    engine = Engine(real_learner, retriever, store, missing_gradients="compute")
    service_settings = Settings(_env_file=None, max_batch=8, max_wait_ms=100, max_question_chars=500)
    app = create_app(service_settings, engine_factory=lambda _: engine)
    with running_server(app) as url:
        yield url, engine, [p.id for p in stored]


def post(url: str, path: str, body: dict, timeout: float = 300) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=timeout)


async def post_many(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        return await asyncio.gather(*(client.post("/answer", json=body) for body in bodies))


def test_answers_in_every_mode(server, corpus):
    url, engine, stored_ids = server
    question = corpus[1][0]
    modes = ["regrad", "regrad_context", "rag", "closed_book"]
    bodies = [{"question": question, "mode": mode, "top_k": 2, "max_new_tokens": TOKENS} for mode in modes]
    responses = asyncio.run(post_many(url, bodies))  # arrive together: one batch, four adaptations
    by_mode = {}
    for mode, response in zip(modes, responses, strict=True):
        assert response.status_code == 200, response.text
        body = by_mode[mode] = response.json()
        assert body["mode"] == mode and body["learner"] == engine.fingerprint
        assert isinstance(body["answer"], str) and body["answer"].strip()
        assert body["timings_ms"]["total"] >= body["timings_ms"]["generate"] > 0
    assert [p["gradient"] for p in by_mode["regrad"]["passages"]] == ["stored", "stored"]
    assert [p["gradient"] for p in by_mode["rag"]["passages"]] == [None, None]
    assert by_mode["closed_book"]["passages"] == []
    assert max(body["batch_size"] for body in by_mode.values()) > 1
    # Deeper passages are not in the store: computed in one backward, answered anyway.
    deeper = post(url, "/answer", {"question": question, "top_k": 3, "max_new_tokens": TOKENS}).json()
    sources = [p["gradient"] for p in deeper["passages"]]
    assert sources == ["stored" if p["id"] in stored_ids else "computed" for p in deeper["passages"]]
    assert "computed" in sources
    assert httpx.get(url + "/readyz").json()["status"] == "ready"
    metrics = httpx.get(url + "/metrics").text
    assert 'regrad_answer_requests_total{mode="regrad",status="200"}' in metrics
    assert 'regrad_gradient_lookups_total{result="computed"}' in metrics


def test_a_stop_bias_cuts_its_own_answer_short_in_a_shared_batch(server, corpus):
    """Over HTTP, on the real model: a request's `stop_bias` ends its answer sooner (a prefix of the
    unbiased answer) while the request batched beside it gets its own unbiased answer."""
    url, _, _ = server
    body = {"question": corpus[1][1], "mode": "closed_book", "max_new_tokens": 8}
    alone = post(url, "/answer", body).json()["answer"]
    biased, plain = asyncio.run(post_many(url, [{**body, "stop_bias": 20.0}, {**body, "stop_bias": 0.0}]))
    assert biased.status_code == plain.status_code == 200, biased.text
    assert plain.json()["answer"] == alone
    assert alone.startswith(biased.json()["answer"]) and len(biased.json()["answer"]) < len(alone)
    refused = post(url, "/answer", {**body, "stop_bias": 21})
    assert refused.status_code == 422 and "stop_bias" in refused.text


def test_a_beam_search_request_gets_the_engines_beam_answer_beside_a_greedy_one(server, corpus):
    """Over HTTP, on the real model: a request with `beams` joins the running beam searches beside the greedy
    batch and gets the answer the engine's own beam search gives; the greedy request sent with it gets its
    answer alone."""
    url, engine, _ = server
    body = {"question": corpus[1][1], "mode": "closed_book", "max_new_tokens": 8}
    alone = post(url, "/answer", body).json()["answer"]
    searched, plain = asyncio.run(post_many(url, [{**body, "beams": 3}, body]))
    assert searched.status_code == plain.status_code == 200, searched.text
    assert plain.json()["answer"] == alone
    question = Question(corpus[1][1], mode="closed_book", max_new_tokens=8, beams=3)
    assert searched.json()["answer"] == engine.answer_batch([question])[0].answer
    refused = post(url, "/answer", {**body, "beams": 3, "stop_bias": 1.0})
    assert refused.status_code == 422 and "beams" in refused.text


def test_document_added_at_run_time_is_retrieved_with_its_gradient(server):
    url, engine, _ = server
    question = {"question": "What is the capital of the island nation of Veltoria?", "top_k": 1,
                "max_new_tokens": 1, "mode": "rag"}
    before = post(url, "/answer", question).json()
    assert [p["id"] for p in before["passages"]] != ["veltoria"]
    doc = {"id": "veltoria", "title": "Veltoria",
           "text": "Veltoria is an island nation in the Quell Sea. Its capital is Marrowick."}
    added = post(url, "/documents", {"documents": [doc]})
    assert added.status_code == 200, added.text
    assert (added.json()["added"], added.json()["gradients_stored"]) == (1, 1)
    after = post(url, "/answer", {**question, "mode": "regrad"}).json()  # no restart in between
    assert [(p["id"], p["gradient"]) for p in after["passages"]] == [("veltoria", "stored")]
    again = post(url, "/documents", {"documents": [doc]}).json()
    assert (again["added"], again["existing"], again["gradients_stored"]) == (0, 1, 0)
    changed = post(url, "/documents", {"documents": [{**doc, "text": "Veltoria's capital is Dunmere."}]})
    assert changed.status_code == 409


def test_metrics_show_the_relevance_cache_warming_up(server, corpus):
    """The likelihood scoring reads each passage's prompt once: a second question over the same passages
    hits the relevance cache, and GET /metrics says so (the figure to size REGRAD_RELEVANCE_CACHE_MB by)."""
    url, engine, _ = server
    engine.relevance_cache.clear()
    hits, misses = engine.relevance_cache.hits, engine.relevance_cache.misses
    body = {"question": corpus[1][2], "top_k": 2, "max_new_tokens": 1, "composition": "likelihood"}
    assert post(url, "/answer", body).status_code == 200
    assert post(url, "/answer", {**body, "question": corpus[1][2] + "?"}).status_code == 200   # same passages
    text = httpx.get(url + "/metrics", timeout=30).text
    assert f'regrad_cache_misses_total{{cache="relevance"}} {float(misses + 2)}' in text
    assert f'regrad_cache_hits_total{{cache="relevance"}} {float(hits + 2)}' in text
    assert 'regrad_cache_entries{cache="relevance"} 2.0' in text
    budget = next(line for line in text.splitlines() if line.startswith('regrad_cache_max_bytes{cache="relevance"}'))
    assert float(budget.split()[-1]) == engine.relevance_cache.max_bytes > 0
    assert 'regrad_cache_hits_total{cache="gradient"}' in text


def _metric(url: str, name: str) -> float:
    """The value of one unlabelled sample in GET /metrics (0 when absent)."""
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_32_concurrent_requests_each_get_their_solo_answer(server, corpus):
    """fp32, continuous batching (the default scheduler), 8 rows: answers of 1-6 tokens leave at
    different steps and the other requests join the running generation in their place."""
    url, _, _ = server
    questions = corpus[1]
    variants = [
        {"question": questions[i % 4], "mode": mode, "gamma": gamma, "top_k": 1, "max_new_tokens": 1 + (5 * i) % 6}
        for i, (mode, gamma) in enumerate(
            [("regrad", 1.0), ("regrad", 50.0), ("regrad", 0.0), ("closed_book", 1.0),
             ("regrad", 100.0), ("regrad", 20.0), ("regrad", 5.0), ("closed_book", 1.0)]
        )
    ]
    solo = [post(url, "/answer", body).json() for body in variants]  # one at a time: batch size 1
    assert all(body["batch_size"] == 1 for body in solo)
    assert {p["gradient"] for body in solo if body["mode"] == "regrad" for p in body["passages"]} == {"stored"}
    joined_before = _metric(url, "regrad_rows_joined_running_total")

    async def burst() -> tuple[list[httpx.Response], bool]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            # A client that gives up mid-generation must not break the batch for the others. Its 64
            # tokens take > 2 s; it gives up after 1 s (0.2 s was flaky on a loaded 2-core runner:
            # the client could give up before the server had even read its request).
            quitter = asyncio.create_task(client.post("/answer", json={**variants[1], "max_new_tokens": 64},
                                                      timeout=1.0))
            responses = await asyncio.gather(*(client.post("/answer", json=body) for body in variants * 4))
            try:
                await quitter
                quit_early = False
            except httpx.TimeoutException:
                quit_early = True
            return responses, quit_early

    responses, quit_early = asyncio.run(burst())
    assert quit_early
    assert [r.status_code for r in responses] == [200] * 32
    for i, response in enumerate(responses):
        body = response.json()
        expected = solo[i % len(variants)]
        assert body["answer"] == expected["answer"], f"request {i} ({variants[i % 8]}) differs from its solo answer"
        assert [p["id"] for p in body["passages"]] == [p["id"] for p in expected["passages"]]
    assert max(r.json()["batch_size"] for r in responses) > 1
    assert _metric(url, "regrad_rows_joined_running_total") > joined_before  # joins mid-generation happened
    assert _metric(url, "regrad_token_gap_seconds_count") > 0                 # gaps between streamed tokens
    # The quitter's request was withdrawn when its connection closed (its row freed), not run to the end.
    assert _metric(url, 'regrad_answer_requests_total{mode="regrad",status="499"}') == 1
    assert len({s["answer"] for s in solo}) > 1  # the adaptations really differ per row


def test_hostile_questions_are_answered_not_500(server):
    url, _, _ = server
    questions = [
        "title:foo AND (bar OR", "\u0000nul\u0007bell", "?!?!", "🙂🙃 emoji only 🤖",
        "مرحبا بالعالم", '{"json": [1, 2]}', "<script>alert(1)</script>", "a" * 490,
    ]
    bodies = [{"question": q, "mode": "rag", "top_k": 1, "max_new_tokens": 1} for q in questions]
    bodies += [
        {"question": "Is Paris in France?", "answer_type": "yes_no", "max_new_tokens": 2, "mode": "rag",
         "top_k": 1},
        {"question": "Which is a city?", "answer_type": "choice", "choices": ["Paris", "Blue", "Seven"],
         "max_new_tokens": 2, "mode": "regrad_context", "top_k": 1},
    ]
    responses = asyncio.run(post_many(url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), [r.text[:200] for r in responses]
    assert post(url, "/answer", {"question": "a" * 501}).status_code == 422  # over the limit: refused


def test_corrupt_store_row_counts_as_missing(real_learner, corpus, tmp_path):
    passages, questions = corpus
    retriever = TantivyRetriever(tmp_path / "index")
    retriever.add(passages)
    hits = retriever.search(questions[2], k=2)
    store = GradientStore.create(tmp_path / "store", layout=real_learner.layout.to_json(),
                                 fingerprint=real_learner.fingerprint, codec="fp32")
    store.append([p.id for p in hits], torch.randn(2, real_learner.layout.dim) * 1e-4)
    shard = tmp_path / "store" / "shards" / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8 + header_len + 4 * real_learner.layout.dim + 100] ^= 0xFF  # inside row 1 (fp32 rows)
    shard.write_bytes(bytes(data))
    store.clear_cache()
    request = Question(questions[2], top_k=2, max_new_tokens=2)
    for policy, second in (("compute", "computed"), ("skip", "missing")):
        engine = Engine(real_learner, retriever, store, missing_gradients=policy)
        [response] = engine.answer_batch([request])
        assert [p.gradient for p in response.passages] == ["stored", second]
        assert isinstance(response.answer, str)
    retriever.close()
    store.close()


class FakeElasticsearch(BaseHTTPRequestHandler):
    """TEST DOUBLE: just enough of Elasticsearch 8 for `_msearch` and `_count` (one fixed hit)."""

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.elasticsearch+json;compatible-with=8")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        lines = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode().splitlines()
        hit = {"_id": "es-1", "_score": 1.5, "_source": {"title": "Paris", "text": "Paris is in France."}}
        if "_msearch" in self.path:
            self._reply({"responses": [{"status": 200, "hits": {"hits": [hit]}} for _ in lines[::2]]})
        else:
            self._reply({"count": 1})

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


def test_elasticsearch_down_is_503_then_recovers_without_restart(real_learner):
    from fastapi.testclient import TestClient

    port = free_port()
    retriever = ElasticsearchRetriever(f"http://127.0.0.1:{port}", "regrad", max_retries=0, request_timeout_s=5)
    engine = Engine(real_learner, retriever, None)
    app = create_app(Settings(_env_file=None, max_wait_ms=1, retry_after_s=3), engine_factory=lambda _: engine)
    body = {"question": "Where is Paris?", "mode": "rag", "top_k": 1, "max_new_tokens": 1}
    with TestClient(app) as client:
        down = client.post("/answer", json=body)
        assert down.status_code == 503 and down.json()["component"] == "retriever"
        assert int(down.headers["Retry-After"]) >= 1
        assert client.get("/readyz").json()["failing"] == ["retriever"]
        fake_es = ThreadingHTTPServer(("127.0.0.1", port), FakeElasticsearch)
        threading.Thread(target=fake_es.serve_forever, daemon=True).start()
        try:
            up = client.post("/answer", json=body)  # same process, same client: it just works again
            assert up.status_code == 200, up.text
            assert [p["id"] for p in up.json()["passages"]] == ["es-1"]
            assert client.get("/readyz").status_code == 200
        finally:
            fake_es.shutdown()
            fake_es.server_close()


def test_evaluate_over_http_matches_in_process(server, corpus):
    from offline_tools.datasets.augmented import AugmentedRecord
    from offline_tools.evaluation.evaluate import evaluate_http, evaluate_in_process

    url, engine, _ = server
    records = [AugmentedRecord(id=f"q{i}", dataset="hotpotqa", question=q, answers=["Chief of Protocol"],
                               passages=[]) for i, q in enumerate(corpus[1][:2])]
    options = dict(modes=["regrad", "closed_book"], top_k=1, max_new_tokens=TOKENS, progress=False)
    over_http = evaluate_http(url, records, concurrency=4, **options)
    in_process = evaluate_in_process(engine, records, **options)  # the server is idle: same engine, no HTTP
    assert over_http.errors == in_process.errors == 0
    assert [p["answer"] for p in over_http.predictions] == [p["answer"] for p in in_process.predictions]
    assert [p["passages"] for p in over_http.predictions] == [p["passages"] for p in in_process.predictions]
    assert set(over_http.tables) == {"regrad", "closed_book"}


_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=120).filter(str.strip)


@st.composite
def answer_bodies(draw) -> dict:
    """Any valid /answer body (the schema's space), with generation kept to one token."""
    mode = draw(st.sampled_from(["regrad", "regrad_context", "rag", "closed_book"]))
    top_k = draw(st.integers(1, 20))
    body = {"question": draw(_TEXT), "mode": mode, "max_new_tokens": 1,
            # Prompt passages cost prefill time on CPU; blind modes take any top_k.
            "top_k": top_k if mode in ("regrad", "closed_book") else min(top_k, 2),
            "gamma": draw(st.floats(0, 100, allow_nan=False, allow_infinity=False))}
    answer_type = draw(st.sampled_from(["short", "yes_no", "choice"]))
    body["answer_type"] = answer_type
    if answer_type == "choice":
        body["choices"] = draw(st.lists(_TEXT, min_size=2, max_size=5))
    return body


@pytest.fixture(scope="module")
def skip_client(server):
    """The real stack in-process, with misses skipped (so any top_k costs no backward pass)."""
    from fastapi.testclient import TestClient

    _, served, _ = server
    engine = Engine(served.learner, served.retriever, served.store, missing_gradients="skip")
    engine.close = lambda: None  # the module's server still uses the retriever and the store
    with TestClient(create_app(Settings(_env_file=None, max_wait_ms=1), engine_factory=lambda _: engine)) as client:
        yield client


@given(body=answer_bodies())
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_valid_request_gets_an_answer_from_the_real_model(skip_client, body):
    response = skip_client.post("/answer", json=body)
    assert response.status_code == 200, (body, response.text[:300])
    assert response.json()["mode"] == body["mode"]


def test_retrieval_query_retrieves_for_another_text(server, corpus):
    """The shift control's building block: the passages (and so the gradients) of another question."""
    url, _, _ = server
    _, questions = corpus
    own = post(url, "/answer", {"question": questions[0], "mode": "regrad", "top_k": 2,
                                "max_new_tokens": TOKENS}).json()
    shifted = post(url, "/answer", {"question": questions[0], "mode": "regrad", "top_k": 2,
                                    "max_new_tokens": TOKENS, "retrieval_query": questions[1]}).json()
    other = post(url, "/answer", {"question": questions[1], "mode": "rag", "top_k": 2,
                                  "max_new_tokens": TOKENS}).json()
    assert [p["id"] for p in shifted["passages"]] == [p["id"] for p in other["passages"]]
    assert [p["id"] for p in shifted["passages"]] != [p["id"] for p in own["passages"]]
    blank = post(url, "/answer", {"question": questions[0], "retrieval_query": "  "})
    assert blank.status_code == 422 and "retrieval_query" in blank.text
