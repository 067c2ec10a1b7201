"""Running one `AnswerRequest` through the batcher, whole or token by token: shared by POST /answer
and the OpenAI-compatible /v1/chat/completions.

A streamed request is submitted with a token callback: the scheduler calls it on the model thread
with each token as it is decoded, and the callback hands the token to the event loop
(`call_soon_threadsafe`), where `AnswerStream.next()` returns it. Tokens arrive before the answer,
in order. The static scheduler never calls it: its stream is the whole answer at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from service.batching import Batched
from service.errors import is_unavailable
from service.metrics import ServiceMetrics
from service.schemas import AnswerRequest, AnswerResponse
from service.settings import Settings

__all__ = [
    "CLIENT_CLOSED",
    "SSE_HEADERS",
    "ClientDisconnectedError",
    "unless_disconnected",
    "check_limits",
    "status_of",
    "final_response",
    "TokenText",
    "AnswerStream",
    "next_item",
    "sse",
    "tokenizer_of",
]

T = TypeVar("T")
CLIENT_CLOSED = 499           # nginx's code for "the client closed the connection first"
_DISCONNECT_POLL_S = 0.1
# No proxy buffering (nginx honours X-Accel-Buffering), no caching of an event stream.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready; its request was withdrawn."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
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


def _too_long(loc: tuple, value: str, limit: int, what: str) -> dict[str, Any]:
    return {
        "type": "string_too_long",
        "loc": ("body", *loc),
        "msg": f"{what} has {len(value)} characters, limit {limit}; shorten it",
        "input": value[:100] + "...",
        "ctx": {"max_length": limit},
    }


def check_limits(body: AnswerRequest, settings: Settings) -> None:
    """422s, shaped like pydantic's own, for limits that come from the settings, not the schema."""
    errors = []
    if len(body.question) > settings.max_question_chars:
        errors.append(_too_long(("question",), body.question, settings.max_question_chars, "question"))
    for i, passage in enumerate(body.passages or []):
        if len(passage.text) > settings.max_document_chars:
            errors.append(_too_long(("passages", i, "text"), passage.text, settings.max_document_chars, "text"))
    if errors:
        raise RequestValidationError(errors)


def status_of(error: BaseException) -> int:
    """The HTTP status the app's handlers give `error`."""
    return int(getattr(error, "status_code", 503 if is_unavailable(error) else 500))


def final_response(batched: Batched, started_s: float, metrics: ServiceMetrics) -> AnswerResponse:
    """The engine's answer as an AnswerResponse, with the route's queue and total times; observed."""
    response = AnswerResponse.from_answer(batched.result)
    timings = response.timings_ms.model_copy(
        update={"queue": batched.queue_ms, "total": (time.perf_counter() - started_s) * 1000.0}
    )
    response = response.model_copy(update={"timings_ms": timings, "batch_size": batched.batch_size})
    metrics.observe_stages(timings.model_dump())
    metrics.count_gradients([passage.gradient for passage in response.passages])
    return response


def tokenizer_of(engine: Any) -> Any:
    """The engine's tokenizer (None for a test double without a model)."""
    return getattr(getattr(engine, "learner", None), "tokenizer", None)


class TokenText:
    """One row's answer text as its tokens arrive: `push(token_id)` returns the new text, or None once
    the answer has ended (a newline or an end-of-turn token; the answer is one line).

    The text pushed out is the stripped answer so far, so the pieces add up to what the answer's
    `short` form will be: trailing spaces wait for the next word, an incomplete UTF-8 character for
    its remaining bytes.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.sent = ""
        self.ended = False
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def push(self, token_id: int) -> str | None:
        if self.ended or self.tokenizer is None:
            return None
        if token_id in self._special:
            self.ended = True
            return None
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if "\n" in text:
            text, self.ended = text.split("\n", 1)[0], True
        elif text.endswith("\ufffd"):  # part of a multi-byte character: wait for the rest
            return ""
        visible = text.strip()
        if not visible.startswith(self.sent):  # decoding merged differently: send nothing, the answer corrects
            return ""
        delta, self.sent = visible[len(self.sent):], visible
        return delta


_END = object()


class AnswerStream:
    """One question submitted with a token callback; `next()` gives each token id as it is decoded,
    then the `Batched` answer (or raises the request's error). `cancel()` withdraws the request.

    Example:
        stream = AnswerStream(batcher, question)
        while not isinstance(item := await stream.next(), Batched):
            print(item)                              # a token id
    """

    def __init__(self, batcher: Any, question: Any) -> None:
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.tokens = 0

        def on_token(token_id: int) -> None:  # on the model thread
            loop.call_soon_threadsafe(self._queue.put_nowait, token_id)

        self._task = asyncio.ensure_future(batcher.submit(question, on_token=on_token))
        self._task.add_done_callback(lambda _: self._queue.put_nowait(_END))

    async def next(self) -> int | Batched:
        item = await self._queue.get()
        if item is _END:
            return self._task.result()  # the answer, or the request's error raised
        self.tokens += 1
        return item

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()


async def next_item(request: Request, stream: AnswerStream, count: Callable[[int], None]) -> int | Batched:
    """`stream.next()`, the request withdrawn if the client leaves first (ClientDisconnectedError) or
    if it fails; either way the outcome is counted (`count(status)`) and the error re-raised."""
    try:
        return await unless_disconnected(request, stream.next())
    except ClientDisconnectedError:
        stream.cancel()
        count(CLIENT_CLOSED)
        raise
    except BaseException as error:  # turned into a response by the app's handlers
        stream.cancel()
        count(status_of(error))
        raise


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event: `event:` line if named, one `data:` line of JSON (or a plain string)."""
    # json.dumps' ASCII output: a lone surrogate stays an escape instead of failing to encode.
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
