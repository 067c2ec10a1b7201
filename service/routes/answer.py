"""POST /answer: one question in, one answer out; concurrent requests share a generation batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from service.deps import ApiKeyDep, BatcherDep, MetricsDep, SettingsDep
from service.errors import is_unavailable
from service.schemas import AnswerRequest, AnswerResponse, ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["answer"])

T = TypeVar("T")
CLIENT_CLOSED = 499           # nginx's code for "the client closed the connection first"
_DISCONNECT_POLL_S = 0.1


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready; its request was withdrawn."""


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it as soon as the client disconnects (a load balancer's timeout, a
    user who gave up): a waiting request leaves the queue, a decoding one frees its row."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnectedError()
    finally:
        if not task.done():
            task.cancel()


def _too_long(field: str, value: str, limit: int) -> RequestValidationError:
    """A 422 shaped like pydantic's own, for limits that come from the settings, not the schema."""
    return RequestValidationError(
        [
            {
                "type": "string_too_long",
                "loc": ("body", field),
                "msg": f"{field} has {len(value)} characters, limit {limit}; shorten it",
                "input": value[:100] + "...",
                "ctx": {"max_length": limit},
            }
        ]
    )


@router.post(
    "/answer",
    response_model=AnswerResponse,
    responses={
        401: {"model": ErrorResponse, "description": "missing or wrong API key"},
        503: {"model": ErrorResponse, "description": "retrieval backend down or queue full; see Retry-After"},
    },
    summary="Answer a question with retrieved knowledge applied as gradients, in the prompt, or both",
)
async def answer(
    body: AnswerRequest, request: Request, batcher: BatcherDep, settings: SettingsDep, metrics: MetricsDep,
    _: ApiKeyDep,
) -> AnswerResponse | Response:
    if len(body.question) > settings.max_question_chars:
        raise _too_long("question", body.question, settings.max_question_chars)
    started_s = time.perf_counter()
    status = "500"
    try:
        batched = await _unless_disconnected(request, batcher.submit(body.to_question()))
        status = "200"
    except ClientDisconnectedError:
        status = str(CLIENT_CLOSED)
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the access log and metrics do
    except Exception as error:  # counted here, turned into a response by the app's handlers
        status = str(getattr(error, "status_code", 503 if is_unavailable(error) else 500))
        raise
    finally:
        metrics.answer_requests.labels(mode=body.mode, status=status).inc()
    response = AnswerResponse.from_answer(batched.result)
    timings = response.timings_ms.model_copy(
        update={"queue": batched.queue_ms, "total": (time.perf_counter() - started_s) * 1000.0}
    )
    response = response.model_copy(update={"timings_ms": timings, "batch_size": batched.batch_size})
    metrics.observe_stages(timings.model_dump())
    metrics.count_gradients([passage.gradient for passage in response.passages])
    return response

