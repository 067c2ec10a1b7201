"""The real service over HTTP through the clients people already have: the official `openai` Python
client against uvicorn on 127.0.0.1 (streaming and not), /answer streamed, caller passages. The
bundled model (untrained learner), continuous scheduler, a tantivy index of a few passages."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from engine.core import Engine
from gradient_store import GradientStore
from retrieval.passage import Passage
from retrieval.tantivy_backend import TantivyRetriever
from service.app import create_app
from service.settings import Settings

from .conftest import running_server

pytestmark = pytest.mark.integration

TOKENS = 6
FACTS = [
    Passage("v1", "Veltoria", "Veltoria is an island nation. Its capital is Marrowick."),
    Passage("m1", "Marrowick", "Marrowick is a port city founded by fishermen in 1412."),
]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(real_learner, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    retriever = TantivyRetriever(root / "index")
    retriever.add(FACTS)
    store = GradientStore.create(root / "store", layout=real_learner.layout.to_json(),
                                 fingerprint=real_learner.fingerprint)
    engine = Engine(real_learner, retriever, store)
    app = create_app(Settings(_env_file=None, max_batch=4, max_wait_ms=20), engine_factory=lambda _: engine)
    with running_server(app) as url:
        yield url, engine


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=300)


def solo(url: str, **body) -> dict:
    response = httpx.post(url + "/answer", json={"question": QUESTION, "max_new_tokens": TOKENS, **body}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_are_listed(client, server):
    [model] = client.models.list().data
    assert model.id == "regrad-smollm2-135m" and model.owned_by == "regrad"
    assert client.models.retrieve(model.id).id == model.id


def test_chat_completion_matches_answer(client, server):
    url, engine = server
    completion = client.chat.completions.create(
        model="regrad-smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=TOKENS,
        temperature=0.7, extra_body={"mode": "closed_book"},
    )
    expected = solo(url, mode="closed_book")["answer"]
    assert completion.choices[0].message.content == expected and expected
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.model == "regrad-smollm2-135m" and completion.object == "chat.completion"


def test_chat_completion_streams_the_same_answer_in_pieces(client, server):
    url, _ = server
    stream = client.chat.completions.create(
        model="regrad-smollm2-135m", messages=[{"role": "user", "content": QUESTION}], max_tokens=TOKENS,
        stream=True, extra_body={"mode": "regrad", "top_k": 2, "gamma": 1.0},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    expected = solo(url, mode="regrad", top_k=2)["answer"]
    assert "".join(pieces) == expected and expected
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert [p["id"] for p in chunks[-1].model_extra["regrad"]["passages"]] == ["v1"]  # "capital" is only there


def test_openai_client_sees_errors_in_openais_shape(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"gamma": 1000})
    assert caught.value.status_code == 422
    assert caught.value.body["param"] == "gamma" and caught.value.body["type"] == "invalid_request_error"


def test_answer_streams_tokens_then_the_answer_then_done(server):
    url, _ = server
    with httpx.stream("POST", url + "/answer", timeout=300,
                      json={"question": QUESTION, "mode": "rag", "top_k": 1, "max_new_tokens": TOKENS,
                            "stream": True}) as response:
        assert response.status_code == 200
        blocks = response.read().decode().strip().split("\n\n")
    parsed = [dict(line.split(": ", 1) for line in block.splitlines()) for block in blocks]
    assert parsed[-1] == {"data": "[DONE]"}
    assert parsed[-2]["event"] == "answer"
    tokens = [json.loads(p["data"]) for p in parsed[:-2]]
    assert tokens and all(p["event"] == "token" for p in parsed[:-2])
    answer = json.loads(parsed[-2]["data"])
    assert "".join(t["text"] for t in tokens) == answer["answer"] == solo(url, mode="rag", top_k=1)["answer"]


def test_caller_passages_are_computed_then_cached_and_returned_with_text(server):
    url, engine = server
    given = [{"title": "Ostrava", "text": "Ostrava is a city in the Czech Republic.", "id": "mine"}]
    first = solo(url, passages=given, include_text=True, top_k=5)
    assert [(p["id"], p["gradient"], p["text"]) for p in first["passages"]] == [("mine", "computed", given[0]["text"])]
    second = solo(url, passages=given)
    assert [(p["id"], p["gradient"]) for p in second["passages"]] == [("mine", "cached")]
    assert second["answer"] == first["answer"] and "text" not in second["passages"][0]
    assert len(engine.store) == 0                                    # not written back unasked
