"""The FastAPI app: `create_app(settings)` wires routes, error handlers and metrics; `lifespan` owns
the engine (model, retriever, store) and the batcher, opened at start-up and closed at shut-down.

Example:
    from service.app import create_app
    from service.settings import Settings
    app = create_app(Settings(index="artifacts/index", store="artifacts/store"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import MODES, __version__
from service.batching import ContinuousBatcher, MicroBatcher
from service.errors import install_error_handlers, openai_shaped
from service.metrics import ServiceMetrics
from service.routes import answer, documents, health, openai, page
from service.settings import Settings

__all__ = ["create_app", "lifespan", "EngineFactory", "RequestIdFilter", "current_request_id", "REQUEST_ID_HEADER"]

logger = logging.getLogger("regrad.service")
access_logger = logging.getLogger("regrad.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's X-Request-ID is kept only when it is a plain token (no spaces, quotes or control
# characters to forge or break log lines, at most 128 characters); anything else gets a new id.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("regrad_request_id", default=None)

EngineFactory = Callable[[Settings], Any]

_DESCRIPTION = """\
Answers questions with **retrievable gradients**: the top-k retrieved passages' precomputed
gradients are summed and applied to a LoRA adapter for that request only.

Modes:
""" + "".join(f"- `{name}`: {spec.description}\n" for name, spec in MODES.items())


def _default_engine_factory(settings: Settings) -> Any:
    from engine.core import Engine  # heavy (torch, transformers): only when a real engine is built

    return Engine.from_config(settings.engine_config())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the engine and start the batcher; on shut-down stop the batcher and close the engine."""
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    # The engine is built on the thread that will run the model: on a CPU, torch driven from two
    # threads (the event loop's and the model's) made every op of the model ~1.9x slower.
    build = functools.partial(app.state.engine_factory, settings)
    batcher: MicroBatcher | ContinuousBatcher
    if settings.scheduler == "continuous":
        batcher = ContinuousBatcher(
            max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
            on_batch=metrics.batch_size.observe, on_joined_running=metrics.rows_joined_running.inc,
            prefill_budget_tokens=settings.prefill_budget_tokens or None, work_ahead=settings.work_ahead,
            on_token_gap=metrics.token_gap_seconds.observe,
        )
        await batcher.start(build)
        engine = batcher.engine
        metrics.live_rows.set_function(lambda: batcher.live)
    else:
        batcher = MicroBatcher(
            lambda rows: engine.answer_outcomes(rows),
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            on_batch=metrics.batch_size.observe,
        )
        await batcher.start()
        try:
            engine = await batcher.run_exclusive(build)
        except BaseException:
            await batcher.stop()
            raise
    metrics.queue_depth.set_function(lambda: batcher.queued)
    metrics.watch_caches({name: getattr(engine, f"{name}_cache", None) for name in ("gradient", "relevance")})
    app.state.engine, app.state.batcher = engine, batcher
    logger.info("regrad service ready (learner %s, %s scheduler)", getattr(engine, "fingerprint", "?")[:16],
                settings.scheduler)
    try:
        yield
    finally:
        await batcher.stop()
        engine.close()  # closes the Elasticsearch client and the store


def current_request_id() -> str | None:
    """The id of the HTTP request being handled by this task (None outside one)."""
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Stamps `record.request_id` with the id of the request being handled where the record was made
    (None outside a request); a record that already carries one (an access line) keeps it.

    Put it on a handler: `regrad serve` adds it to its root handler. Model work runs on the batcher's
    worker thread for a whole batch, so the engine's lines carry no single request's id.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        return True


class _RequestIdMiddleware:
    """Gives every HTTP request an id and writes one access line for it (pure ASGI).

    The id is the client's `X-Request-ID` when that is a plain token, else a fresh uuid4 hex; it is
    set in a context variable for the request's duration (see `RequestIdFilter`), returned in the
    response's `X-Request-ID` header and written in the access line on the `regrad.access` logger
    (INFO): `client "METHOD path" status duration ms`, with `method`, `path`, `status`,
    `duration_ms`, `client` and `request_id` as record attributes (fields of a JSON log line).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._client_request_id(scope) or uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "logged": False}

        def log_access() -> None:
            if state["logged"]:
                return
            state["logged"] = True
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            host_port = scope.get("client")
            client = f"{host_port[0]}:{host_port[1]}" if host_port else "-"
            method, path = scope.get("method", "?"), scope.get("path", "?")
            access_logger.info(
                '%s "%s %s" %d %.1f ms', client, method, path, state["status"], duration_ms,
                extra={"method": method, "path": path, "status": state["status"], "duration_ms": duration_ms,
                       "client": client, "request_id": request_id},
            )

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode("ascii"))]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log_access()  # before the last byte leaves: whoever has the response can find its line
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            log_access()  # the response never completed (an error, a client gone): still one line
            _request_id.reset(token)

    @staticmethod
    def _client_request_id(scope: Scope) -> str | None:
        for key, value in scope.get("headers", []):
            if key.lower() == b"x-request-id":
                text = value.decode("latin-1").strip()
                return text if _CLIENT_REQUEST_ID.fullmatch(text) else None
        return None


class _RequestMetricsMiddleware:
    """Counts every HTTP request by route template and status (pure ASGI: safe when clients leave)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            # Route templates only: raw paths would let clients create unbounded label values.
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(route=template, status=str(status["code"])).inc()


def _install_openapi_limits(app: FastAPI, settings: Settings) -> None:
    """Make /docs state the configured limits (the schema classes only carry hard ceilings)."""
    build_default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_default()
            components = schema.get("components", {}).get("schemas", {})
            question = components.get("AnswerRequest", {}).get("properties", {}).get("question")
            if question is not None:
                question["maxLength"] = settings.max_question_chars
            documents = components.get("DocumentsRequest", {}).get("properties", {}).get("documents")
            if documents is not None:
                documents["maxItems"] = settings.max_documents
            text = components.get("DocumentIn", {}).get("properties", {}).get("text")
            if text is not None:
                text["maxLength"] = settings.max_document_chars
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """Build the regrad service app.

    Args:
        settings: service settings; default: read from `REGRAD_*` environment variables and `.env`.
        engine_factory: builds the engine at start-up (default: `engine.Engine` from
            `settings.engine_config()`); tests pass a double with the same methods (`answer_outcomes`,
            `add_documents`, `readiness`, `close`).

    Returns:
        The FastAPI app; its lifespan loads the model, so start it with uvicorn or `with TestClient(app)`.
    """
    settings = settings if settings is not None else Settings()
    # /docs and /redoc are the page router's: their files are served from the package, not a CDN.
    app = FastAPI(title="regrad", version=__version__, description=_DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine_factory = engine_factory or _default_engine_factory
    app.state.started_at = time.time()
    app.state.metrics = metrics = ServiceMetrics()
    install_error_handlers(app, settings.retry_after_s)

    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return JSONResponse(
            status_code=500, content={"detail": f"internal error ({type(error).__name__}); see the server log"}
        )

    app.add_exception_handler(Exception, openai_shaped(internal_error))
    app.include_router(answer.router)
    app.include_router(documents.router)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(page.router)
    page.mount_static(app)
    app.add_middleware(_RequestMetricsMiddleware, metrics=metrics)
    _wrap_with_request_ids(app)
    _install_openapi_limits(app, settings)
    return app


def _wrap_with_request_ids(app: FastAPI) -> None:
    """Put `_RequestIdMiddleware` outside the whole stack, Starlette's ServerErrorMiddleware included
    (`add_middleware` would put it inside): so a 500 from an unhandled error carries the id too, and
    the handler's "unhandled error" line is logged while the id is set."""
    build_stack = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return _RequestIdMiddleware(build_stack())

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
