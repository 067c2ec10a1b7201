"""POST /answer: one question in, one answer out (whole, or streamed as server-sent events);
concurrent requests share a generation batch."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

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
from service.metrics import ServiceMetrics
from service.schemas import AnswerRequest, AnswerResponse, ErrorResponse

__all__ = ["router", "CLIENT_CLOSED", "ClientDisconnectedError"]

router = APIRouter(tags=["answer"])

_STREAM_DOC = (
    "With `stream: true`: `text/event-stream`. One `event: token` per decoded token, `data: "
    '{"token_id": 9, "text": "Par"}` (`text`: what it adds to the answer, may be empty); then '
    "`event: answer` with the whole response as above; then `data: [DONE]`. A failure after the "
    'first token is `event: error`, `data: {"detail": ..., "status": 503}`, then `data: [DONE]`.'
)

# One server-sent event of the stream (fields as the SSE format names them; `data` is JSON, or [DONE] in
# the closing event, which has no name: SSE calls that `message`).
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["token", "answer", "error", "message"]},
        "data": {"type": "string"},
    },
}


@router.post(
    "/answer",
    response_model=AnswerResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}}, "description": _STREAM_DOC},
        401: {"model": ErrorResponse, "description": "missing or wrong API key"},
        503: {"model": ErrorResponse, "description": "retrieval backend down or queue full; see Retry-After"},
    },
    summary="Answer a question with retrieved knowledge applied as gradients, in the prompt, or both",
)
async def answer(
    body: AnswerRequest, request: Request, batcher: BatcherDep, engine: EngineDep, settings: SettingsDep,
    metrics: MetricsDep, _: ApiKeyDep,
) -> AnswerResponse | Response:
    check_limits(body, settings)
    started_s = time.perf_counter()

    def count(status: int) -> None:
        metrics.answer_requests.labels(mode=body.mode, status=str(status)).inc()

    stream = AnswerStream(batcher, body.to_question())
    try:
        # Streamed or not, wait for the first token or the answer: an error before it (queue full,
        # retriever down) is a plain HTTP error response, not an event in a 200 stream.
        item = await next_item(request, stream, count)
        if body.stream:
            events = _answer_events(body, stream, item, TokenText(tokenizer_of(engine)), started_s, metrics)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        while not isinstance(item, Batched):  # tokens nobody streams
            item = await next_item(request, stream, count)
    except ClientDisconnectedError:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the access log and metrics do
    count(200)
    return JSONResponse(final_response(item, started_s, metrics).to_json(body.include_text))


async def _answer_events(body: AnswerRequest, stream: AnswerStream, item: int | Batched, text: TokenText,
                         started_s: float, metrics: ServiceMetrics) -> AsyncIterator[str]:
    status = str(CLIENT_CLOSED)  # until the stream ends one way or the other
    try:
        while not isinstance(item, Batched):
            delta = text.push(item)
            if delta is not None:
                yield sse({"token_id": item, "text": delta}, event="token")
            item = await stream.next()
        response = final_response(item, started_s, metrics)
        status = "200"
        yield sse(response.to_json(body.include_text), event="answer")
    except Exception as error:
        status = str(status_of(error))
        yield sse({"detail": str(error) or type(error).__name__, "status": int(status)}, event="error")
    finally:
        stream.cancel()
        metrics.answer_requests.labels(mode=body.mode, status=status).inc()
    yield "data: [DONE]\n\n"
