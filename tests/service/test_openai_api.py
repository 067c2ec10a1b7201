"""The OpenAI-compatible /v1 and the new /answer fields (caller passages, include_text, stream) over
the HTTP layer, with the model-free engine double (static scheduler: a stream's answer comes whole).
The real model behind the official `openai` client: tests/service/test_openai_server.py."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def make_client(engine, **settings) -> TestClient:
    app = create_app(Settings(_env_file=None, scheduler="static", max_question_chars=200, max_wait_ms=1,
                              max_document_chars=300, **settings), engine_factory=lambda _: engine)
    return TestClient(app)


@pytest.fixture
def client(fake_engine):
    with make_client(fake_engine) as client:
        yield client


def events(response) -> list[tuple[str | None, str]]:
    """(event name or None, data) of each server-sent event."""
    out = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event"), fields["data"]))
    return out


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": "anything", **body})


def test_models_lists_the_served_learner(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["regrad-smollm2-135m"]
    assert body["data"][0]["learner"] == "f" * 64 and "regrad" in body["data"][0]["modes"]
    assert client.get("/v1/models/regrad-smollm2-135m").json()["id"] == "regrad-smollm2-135m"
    missing = client.get("/v1/models/gpt-4")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_chat_completion_reads_the_last_user_message_and_ignores_unknown_fields(client):
    response = chat(client, messages=[{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "first?"},
                                      {"role": "assistant", "content": "x"},
                                      {"role": "user", "content": [{"type": "text", "text": "Who?"}]}],
                    temperature=0.2, top_p=0.9, user="u1", seed=3, logit_bias={}, stream_options=None,
                    mode="rag", top_k=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "regrad-smollm2-135m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "rag:Who?"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert [p["id"] for p in body["regrad"]["passages"]] == ["p0", "p1"]


def test_chat_completion_takes_the_composition_as_an_extra_field(client):
    body = chat(client, messages=[{"role": "user", "content": "Who?"}], composition="softmax:0.3").json()
    assert body["regrad"]["composition"] == "softmax:0.3"   # the engine (double) was given it
    body = chat(client, messages=[{"role": "user", "content": "Who?"}], composition="likelihood:0.7").json()
    assert body["regrad"]["composition"] == "likelihood:0.7"


def test_chat_completion_takes_a_beam_width_as_an_extra_field(client, fake_engine):
    fake_engine.questions.clear()
    chat(client, messages=[{"role": "user", "content": "Who?"}], beams=4)
    chat(client, messages=[{"role": "user", "content": "Who?"}])
    assert [q.beams for q in fake_engine.questions] == [4, None]   # None: the server's default


@pytest.mark.parametrize(("extra", "param"), [
    ({"composition": "mean"}, "composition.kind"),
    ({"gamma": 101}, "gamma"), ({"top_k": 0}, "top_k"), ({"mode": "telepathy"}, "mode"),
    ({"stop_bias": -1}, "stop_bias"), ({"beams": 9}, "beams"),
    ({"n": 2}, "n"), ({"messages": [{"role": "system", "content": "no user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 201}]}, "messages"),
])
def test_chat_errors_have_openais_shape_naming_the_field(client, extra, param):
    response = chat(client, **{"messages": [{"role": "user", "content": "q"}], **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_chat_503_and_401_have_openais_shape(fake_engine):
    fake_engine.retriever_down = True
    with make_client(fake_engine, api_key="k3y-for-tests") as client:
        unauthorized = chat(client, messages=[{"role": "user", "content": "q"}])
        assert unauthorized.status_code == 401 and unauthorized.json()["error"]["type"] == "authentication_error"
        headers = {"Authorization": "Bearer k3y-for-tests"}
        question = {"messages": [{"role": "user", "content": "q"}]}
        down = client.post("/v1/chat/completions", headers=headers, json=question)
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert down.json()["error"]["type"] == "service_unavailable_error"
        assert client.get("/v1/models", headers=headers).status_code == 200


def test_chat_stream_is_openai_chunks_ending_done(client):
    response = chat(client, messages=[{"role": "user", "content": "Who?"}], stream=True, mode="closed_book")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    data = [d for _, d in events(response)]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "closed_book:Who?"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["regrad"]["mode"] == "closed_book"


def test_answer_stream_ends_with_the_answer_then_done(client):
    response = client.post("/answer", json={"question": "Who?", "stream": True, "top_k": 1})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    got = events(response)
    assert got[-1] == (None, "[DONE]")
    name, data = got[-2]
    assert name == "answer" and json.loads(data)["answer"] == "regrad:Who?"
    assert all(name == "token" for name, _ in got[:-2])


def test_answer_stream_error_before_the_first_token_is_a_plain_503(client, fake_engine):
    fake_engine.retriever_down = True
    response = client.post("/answer", json={"question": "Who?", "stream": True})
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_include_text_and_caller_passages(client):
    plain = client.post("/answer", json={"question": "Who?", "top_k": 2}).json()
    assert all("text" not in p for p in plain["passages"])
    with_text = client.post("/answer", json={"question": "Who?", "top_k": 2, "include_text": True}).json()
    assert [p["text"] for p in with_text["passages"]] == ["text 0", "text 1"]
    given = [{"title": "Veltoria", "text": "Its capital is Marrowick.", "id": "mine", "score": 0.7},
             {"text": "Marrowick is a port."}]
    body = client.post("/answer", json={"question": "Capital?", "top_k": 1, "passages": given,
                                        "include_text": True}).json()
    assert [(p["id"], p["score"], p["text"]) for p in body["passages"]] == [
        ("mine", 0.7, "Its capital is Marrowick."), ("hash1", 0.0, "Marrowick is a port.")]


@pytest.mark.parametrize(("passages", "field"), [
    ([], "passages"),
    ([{"title": "t", "text": "x"}] * 21, "passages"),
    ([{"title": "t", "text": " "}], "text"),
    ([{"title": "t"}], "text"),
    ([{"title": "t", "text": "x" * 301}], "text"),          # over max_document_chars (300 here)
    ([{"title": "t" * 1001, "text": "x"}], "title"),
    ([{"text": "x", "id": ""}], "id"),
    ([{"text": "x", "score": "high"}], "score"),
    ([{"text": "x", "url": "u"}], "url"),
])
def test_bad_caller_passages_are_422_naming_the_field(client, passages, field):
    response = client.post("/answer", json={"question": "q", "passages": passages})
    assert response.status_code == 422, response.text
    assert field in [str(p) for e in response.json()["detail"] for p in e["loc"]]
