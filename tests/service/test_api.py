"""The HTTP layer with a model-free engine double: validation (422 naming the field), auth, 503s,
recovery, readiness and metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from engine.composition import DEFAULT_TEMPERATURES
from engine.modes import MODE_NAMES, mode_spec
from gradient_store import StoreLockedError
from service.app import create_app
from service.settings import Settings


def make_client(engine, **settings) -> TestClient:
    app = create_app(Settings(_env_file=None, scheduler="static", max_question_chars=200, max_wait_ms=1, **settings),
                     engine_factory=lambda _: engine)
    return TestClient(app)


@pytest.fixture
def client(fake_engine):
    with make_client(fake_engine) as client:
        yield client


def fields_of(response) -> list[str]:
    """The field each 422 error points at (last `loc` element that is a name)."""
    assert response.status_code == 422, response.text
    return [next(str(p) for p in reversed(e["loc"]) if not isinstance(p, int)) for e in response.json()["detail"]]


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_answer_in_each_mode(client, mode):
    assert {"rag_base", "closed_book_base"} <= set(MODE_NAMES)
    response = client.post("/answer", json={"question": "Who?", "mode": mode, "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == f"{mode}:Who?" and body["mode"] == mode
    assert len(body["passages"]) == (2 if mode_spec(mode).retrieve else 0)
    assert set(body["timings_ms"]) >= {"retrieve", "gradients", "generate", "total", "queue"}
    assert body["learner"] == "f" * 64


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "  \n\t "}, "question"),
        ({"question": "x" * 201}, "question"),            # over the configured limit (200)
        ({"question": "q", "top_k": 0}, "top_k"),
        ({"question": "q", "top_k": 21}, "top_k"),
        ({"question": "q", "top_k": "three"}, "top_k"),
        ({"question": "q", "gamma": -0.5}, "gamma"),
        ({"question": "q", "gamma": 100.01}, "gamma"),
        ({"question": "q", "gamma": 1e30}, "gamma"),
        ({"question": "q", "mode": "telepathy"}, "mode"),
        ({"question": "q", "answer_type": "essay"}, "answer_type"),
        ({"question": "q", "answer_type": "choice"}, "choices"),
        ({"question": "q", "answer_type": "choice", "choices": ["only one"]}, "choices"),
        ({"question": "q", "answer_type": "choice", "choices": list("abcdef")}, "choices"),
        ({"question": "q", "answer_type": "choice", "choices": ["a", " "]}, "choices"),
        ({"question": "q", "choices": ["a", "b"]}, "choices"),   # choices without answer_type choice
        ({"question": "q", "max_new_tokens": 0}, "max_new_tokens"),
        ({"question": "q", "topk": 3}, "topk"),                  # unknown field (a typo) is refused
        ({"question": "q", "composition": "mean"}, "kind"),
        ({"question": "q", "composition": "softmax:hot"}, "temperature"),
        ({"question": "q", "composition": {"kind": "softmax", "temperature": 0}}, "temperature"),
        ({"question": "q", "composition": {"kind": "softmax", "temp": 1}}, "temp"),
        ({"question": "q", "composition": "likelihood:-1"}, "temperature"),
        ({"question": "q", "composition": 3}, "composition"),
        ({"question": "q", "composition": "softmax:0.1:0"}, "total"),
        ({"question": "q", "composition": {"kind": "likelihood", "total": "many"}}, "total"),
        ({"question": "q", "stop_bias": -1}, "stop_bias"),
        ({"question": "q", "stop_bias": 20.5}, "stop_bias"),
        ({"question": "q", "stop_bias": "1"}, "stop_bias"),
        ({"question": "q", "beams": 0}, "beams"),
        ({"question": "q", "beams": 9}, "beams"),
        ({"question": "q", "beams": "2"}, "beams"),
        ({"question": "q", "beams": 2.5}, "beams"),
        ({"question": "q", "beams": 4, "stop_bias": 1.0}, "beams"),
    ],
)
def test_bad_answer_input_is_422_naming_the_field(client, payload, field):
    assert field in fields_of(client.post("/answer", json=payload))


def test_a_total_for_the_plain_sum_is_422_saying_why(client):
    response = client.post("/answer", json={"question": "q", "composition": "sum:1:3"})
    assert "composition" in fields_of(response)
    assert "plain sum has no weights' total" in response.text


@pytest.mark.parametrize(("composition", "applied"), [
    ("sum", "sum"), ("softmax:0.3", "softmax:0.3"), ({"kind": "softmax", "temperature": 2}, "softmax:2"),
    ("softmax", f"softmax:{DEFAULT_TEMPERATURES['softmax']:g}"), ("likelihood:0.25", "likelihood:0.25"),
    ("likelihood", f"likelihood:{DEFAULT_TEMPERATURES['likelihood']:g}"),
    ({"kind": "likelihood"}, f"likelihood:{DEFAULT_TEMPERATURES['likelihood']:g}"),
    ("likelihood:0.2:3", "likelihood:0.2:3"), ({"kind": "softmax", "temperature": 0.1, "total": 3}, "softmax:0.1:3"),
])
def test_composition_reaches_the_engine_as_string_or_object(client, composition, applied):
    body = client.post("/answer", json={"question": "Who?", "composition": composition}).json()
    assert body["composition"] == applied
    rag = client.post("/answer", json={"question": "Who?", "mode": "rag", "composition": composition}).json()
    assert rag["composition"] is None                          # no gradients, no combination


@pytest.mark.parametrize("raw", ['{"question": "q", "gamma": NaN}', '{"question": "q", "gamma": Infinity}',
                                 '{"question": "q", "gamma": -Infinity}'])
def test_non_finite_gamma_is_422(client, raw):
    response = client.post("/answer", content=raw, headers={"content-type": "application/json"})
    assert "gamma" in fields_of(response)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"question": "a\\ud800b"}', "question"),        # a lone surrogate: legal JSON, not UTF-8
        ('{"question": "q", "\\udfff": 1}', "body"),       # ... also as an unknown field's name
        ('{"question": "q", "top_k": true}', "top_k"),
        ('{"question": "q", "top_k": 2.5}', "top_k"),
        ('{"question": "q", "top_k": 1e400}', "top_k"),
        ('{"question": "q", "gamma": "1"}', "gamma"),
    ],
)
def test_awkward_json_values_are_422_not_500(client, raw, field):
    response = client.post("/answer", content=raw.encode(), headers={"content-type": "application/json"})
    assert field in fields_of(response)


def test_undecodable_body_is_422(client):
    response = client.post("/answer", content=b'{"question": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize("raw", ['{"question": ', "not json", "[1, 2]", '"just a string"', ""])
def test_invalid_json_is_422(client, raw):
    response = client.post("/answer", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "documents"),
        ({"documents": []}, "documents"),
        ({"documents": [{"title": "t"}]}, "text"),
        ({"documents": [{"text": "   "}]}, "text"),
        ({"documents": [{"text": "ok", "id": ""}]}, "id"),
        ({"documents": [{"text": "ok", "url": "x"}]}, "url"),
        ({"documents": [{"text": "ok"}] * 65}, "documents"),  # over the default limit of 64
    ],
)
def test_bad_documents_input_is_422_naming_the_field(client, payload, field):
    assert field in fields_of(client.post("/documents", json=payload))


def test_documents_route_maps_the_engine_result_and_its_conflict_to_409(client, fake_engine):
    """The HTTP mapping only: what the engine did comes back as the response body, and its
    DocumentConflictError as a 409. Idempotency itself is the real engine's, tested in
    tests/engine/test_documents.py."""
    doc = {"id": "d1", "title": "New", "text": "A new passage."}
    first = client.post("/documents", json={"documents": [doc]})
    assert first.status_code == 200
    assert first.json() == {"ids": ["d1"], "added": 1, "existing": 0, "gradients_stored": 1,
                            "learner": fake_engine.fingerprint, "timings_ms": {"total": 0.0}}
    assert [d.text for d in fake_engine.documents.values()] == ["A new passage."]  # an engine Document
    clash = client.post("/documents", json={"documents": [{**doc, "text": "Different text."}]})
    assert clash.status_code == 409 and "d1" in clash.json()["detail"]
    assert clash.json()["component"] == "documents"


def test_documents_while_another_process_writes_the_store_is_503_with_retry_after(client, fake_engine,
                                                                                 monkeypatch):
    def locked(documents):
        raise StoreLockedError("/srv/store", 2.0)  # e.g. a `regrad encode` run holds writer.lock

    monkeypatch.setattr(fake_engine, "add_documents", locked)
    busy = client.post("/documents", json={"documents": [{"id": "d1", "text": "A new passage."}]})
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert busy.json()["component"] == "store" and "writer.lock" in busy.json()["detail"]


def test_api_key_is_required_when_configured(fake_engine):
    with make_client(fake_engine, api_key="s3cret-key") as client:
        body = {"question": "q"}
        assert client.post("/answer", json=body).status_code == 401
        assert client.post("/answer", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/answer", json=body, headers={"Authorization": "Basic czNjcmV0"}).status_code == 401
        latin1_key = {"X-API-Key": "s3cret-kéy".encode("latin-1")}  # not ASCII: must not crash the compare
        assert client.post("/answer", json=body, headers=latin1_key).status_code == 401
        assert client.post("/answer", json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.post("/answer", json=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.post("/documents", json={"documents": [{"text": "t"}]}).status_code == 401
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_placeholder_api_key_is_refused():
    with pytest.raises(ValueError, match="placeholder"):
        Settings(_env_file=None, api_key="changeme")


def test_backend_down_is_503_with_retry_after_and_recovers(client, fake_engine):
    fake_engine.retriever_down = True
    down = client.post("/answer", json={"question": "q", "mode": "rag"})
    assert down.status_code == 503
    assert int(down.headers["Retry-After"]) >= 1
    assert down.json()["component"] == "retriever"
    # A mode that needs no retrieval still answers during the outage.
    assert client.post("/answer", json={"question": "q", "mode": "closed_book"}).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["failing"] == ["retriever"]
    fake_engine.retriever_down = False  # the backend comes back: no restart needed
    assert client.post("/answer", json={"question": "q", "mode": "rag"}).status_code == 200
    assert client.get("/readyz").json() == {
        "status": "ready", "failing": [], "components": {"model": "ok", "retriever": "ok", "store": "ok"}
    }


def test_metrics_count_requests_by_mode_and_status(client):
    client.post("/answer", json={"question": "q", "mode": "rag"})
    client.post("/answer", json={"question": "q", "mode": "regrad", "top_k": 2})
    client.post("/answer", json={"question": ""})
    text = client.get("/metrics").text
    assert 'regrad_answer_requests_total{mode="rag",status="200"} 1.0' in text
    assert 'regrad_http_requests_total{route="/answer",status="422"} 1.0' in text
    assert 'regrad_gradient_lookups_total{result="stored"} 2.0' in text
    assert "regrad_batch_size_count" in text and 'regrad_stage_seconds_count{stage="generate"}' in text


def test_cache_metrics_read_the_caches_at_each_scrape():
    from service.metrics import ServiceMetrics

    class Cache:
        hits, misses, bytes, max_bytes = 3, 1, 2048, 4096

        def __len__(self) -> int:
            return 2

    metrics, cache = ServiceMetrics(), Cache()
    metrics.watch_caches({"relevance": cache, "gradient": None})
    text = metrics.render().decode()
    assert 'regrad_cache_hits_total{cache="relevance"} 3.0' in text and 'cache="gradient"' not in text
    assert 'regrad_cache_bytes{cache="relevance"} 2048.0' in text
    assert 'regrad_cache_entries{cache="relevance"} 2.0' in text
    cache.hits = 7
    assert 'regrad_cache_hits_total{cache="relevance"} 7.0' in metrics.render().decode()
    metrics.watch_caches({"relevance": cache})   # a second start of the app: registered once, not twice
    assert metrics.render().decode().count('regrad_cache_misses_total{cache="relevance"}') == 1


def test_healthz_docs_and_lifespan_close(fake_engine):
    with make_client(fake_engine) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/answer", "/documents", "/healthz", "/readyz", "/metrics"} <= set(paths)
        assert not fake_engine.closed
    assert fake_engine.closed  # shut-down closed the engine (and with it the ES client)
