"""The OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions (whole or streamed).

So that OpenAI's SDKs and what is built on them (LlamaIndex's OpenAILike, Haystack's
OpenAIGenerator, curl scripts written for vLLM or TGI) can use regrad as their model. The question
is the last user message; regrad's own knobs (mode, top_k, gamma, passages, ...) are extra body
fields; unknown OpenAI fields are ignored; errors have OpenAI's shape (see `service.openai_schemas`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from engine.modes import MODE_NAMES
from service.answering import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    AnswerStream,
    ClientDisconnectedError,
    TokenText,
    check_limits,
    final_response,
    next_item,
    sse,
    status_of,
    tokenizer_of,
)
from service.batching import Batched
from service.deps import ApiKeyDep, BatcherDep, EngineDep, MetricsDep, SettingsDep
from service.errors import openai_error_body
from service.metrics import ServiceMetrics
from service.openai_schemas import ChatCompletionRequest, ModelCard, ModelList, OpenAIErrorResponse
from service.schemas import AnswerRequest
from service.settings import SHIPPED_LEARNER, Settings

__all__ = ["router", "served_model_id"]

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse, "description": text}
    for status, text in ((401, "missing or wrong API key"), (422, "invalid request; `param` names the field"),
                         (503, "retrieval backend down or queue full; see Retry-After"))
}


def served_model_id(settings: Settings) -> str:
    """The served learner's name: its folder's name (the shipped one's by default)."""
    if settings.checkpoint is not None:
        return settings.checkpoint.resolve().name
    return f"{settings.preset}-untrained" if settings.untrained else SHIPPED_LEARNER


def _model_card(request: Request, engine: Any, settings: Settings) -> ModelCard:
    return ModelCard(id=served_model_id(settings), created=int(request.app.state.started_at),
                     learner=getattr(engine, "fingerprint", ""), modes=list(MODE_NAMES))


@router.get("/models", response_model=ModelList, responses=_ERRORS, summary="The served learner (OpenAI shape)")
async def list_models(request: Request, engine: EngineDep, settings: SettingsDep, _: ApiKeyDep) -> ModelList:
    return ModelList(data=[_model_card(request, engine, settings)])


@router.get("/models/{model}", response_model=ModelCard, summary="One model (OpenAI shape)",
            responses={**_ERRORS, 404: {"model": OpenAIErrorResponse, "description": "not the served model"}})
async def retrieve_model(model: str, request: Request, engine: EngineDep, settings: SettingsDep,
                         _: ApiKeyDep) -> ModelCard:
    card = _model_card(request, engine, settings)
    if model != card.id:
        raise HTTPException(status_code=404, detail=f"model {model!r} is not served; this server serves {card.id!r}")
    return card


def _answer_request(body: ChatCompletionRequest, settings: Settings) -> AnswerRequest:
    """The /answer request this chat request stands for (422s name the chat request's fields)."""
    question = body.question()
    if question is None or not question.strip():
        raise RequestValidationError([{
            "type": "missing", "loc": ("body", "messages"), "input": None,
            "msg": "no user message with text: the last user message is the question",
        }])
    payload: dict[str, Any] = {"question": question, **body.forwarded()}
    if body.max_new_tokens() is not None:
        payload["max_new_tokens"] = body.max_new_tokens()
    try:
        # JSON in, as for POST /answer: the same strictness (no "3" for 3).
        answer_request = AnswerRequest.model_validate_json(JSONResponse(payload).body)
        check_limits(answer_request, settings)
    except ValidationError as error:
        raise RequestValidationError(_chat_locs(error.errors(include_url=False), ())) from error
    except RequestValidationError as error:
        raise RequestValidationError(_chat_locs(error.errors(), ("body",))) from error
    return answer_request


def _chat_locs(errors: Any, prefix: tuple) -> list[dict[str, Any]]:
    """AnswerRequest's errors pointing at the chat request's fields: `question` is `messages`."""
    out = []
    for error in errors:
        loc = tuple(error["loc"])[len(prefix):]
        out.append({**error, "loc": ("body", *(("messages",) if loc[:1] == ("question",) else loc))})
    return out


@router.post(
    "/chat/completions",
    responses={200: {"description": "chat.completion, or with `stream: true` `text/event-stream` of "
                                    "chat.completion.chunk ending `data: [DONE]`"}, **_ERRORS},
    summary="Answer the last user message (OpenAI chat completions; mode, top_k, gamma as extra fields)",
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, batcher: BatcherDep, engine: EngineDep,
    settings: SettingsDep, metrics: MetricsDep, _: ApiKeyDep,
) -> Response:
    answer_request = _answer_request(body, settings)
    started_s = time.perf_counter()
    completion = _Completion(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), served_model_id(settings),
                             getattr(engine, "fingerprint", "")[:16] or None)

    def count(status: int) -> None:
        metrics.answer_requests.labels(mode=answer_request.mode, status=str(status)).inc()

    stream = AnswerStream(batcher, answer_request.to_question())
    text = TokenText(tokenizer_of(engine))
    try:
        item = await next_item(request, stream, count)
        if body.stream:
            events = _chunks(completion, answer_request, stream, item, text, started_s, metrics)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        while not isinstance(item, Batched):
            text.push(item)
            item = await next_item(request, stream, count)
    except ClientDisconnectedError:
        return Response(status_code=CLIENT_CLOSED)
    count(200)
    response = final_response(item, started_s, metrics)
    return JSONResponse({
        **completion.head("chat.completion"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": response.answer},
                     "logprobs": None, "finish_reason": _finish_reason(text, stream, answer_request)}],
        "regrad": response.to_json(answer_request.include_text),
    })


class _Completion:
    """The fields every chunk and the completion repeat."""

    def __init__(self, id: str, created: int, model: str, system_fingerprint: str | None) -> None:
        self.id, self.created, self.model, self.system_fingerprint = id, created, model, system_fingerprint

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        return sse({**self.head("chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                    **extra})


def _finish_reason(text: TokenText, stream: AnswerStream, request: AnswerRequest) -> str:
    """`length` when the answer was cut by the token limit, else `stop`."""
    return "length" if not text.ended and stream.tokens >= request.max_new_tokens else "stop"


async def _chunks(completion: _Completion, request: AnswerRequest, stream: AnswerStream, item: int | Batched,
                  text: TokenText, started_s: float, metrics: ServiceMetrics) -> AsyncIterator[str]:
    """chat.completion.chunk events: the role, the answer's text as decoded, the finish reason (with
    regrad's passages and timings), `data: [DONE]`. yes_no and choice answers are normalised after
    decoding ("Yes, ..." → "yes"), so they come whole in one chunk at the end."""
    status = CLIENT_CLOSED  # until the stream ends one way or the other
    streams_text = request.answer_type == "short"
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        while not isinstance(item, Batched):
            delta = text.push(item)
            if streams_text and delta:
                yield completion.chunk({"content": delta})
            item = await stream.next()
        response = final_response(item, started_s, metrics)
        sent = text.sent if streams_text else ""
        if response.answer != sent and response.answer.startswith(sent):
            yield completion.chunk({"content": response.answer[len(sent):]})
        status = 200
        yield completion.chunk({}, _finish_reason(text, stream, request),
                               regrad=response.to_json(request.include_text))
    except Exception as error:
        status = status_of(error)
        yield sse(openai_error_body(status, str(error) or type(error).__name__))
    finally:
        stream.cancel()
        metrics.answer_requests.labels(mode=request.mode, status=str(status)).inc()
    yield "data: [DONE]\n\n"
