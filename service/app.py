"""The FastAPI app: `create_app(settings)` wires routes, error handlers and metrics; `lifespan` owns
the engine (model, retriever, store) and the batcher, opened at start-up and closed at shut-down.

Example:
    from service.app import create_app
    from service.settings import Settings
    app = create_app(Settings(index="artifacts/index", store="artifacts/store"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import MODES, __version__
from service.batching import MicroBatcher
from service.errors import install_error_handlers
from service.metrics import ServiceMetrics
from service.routes import answer, documents, health
from service.settings import Settings

__all__ = ["create_app", "lifespan", "EngineFactory"]

logger = logging.getLogger("regrad.service")

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
    engine = app.state.engine_factory(settings)
    batcher = MicroBatcher(
        engine.answer_outcomes,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        on_batch=metrics.batch_size.observe,
    )
    await batcher.start()
    metrics.queue_depth.set_function(lambda: batcher.queued)
    app.state.engine, app.state.batcher = engine, batcher
    logger.info("regrad service ready (learner %s)", getattr(engine, "fingerprint", "?")[:16])
    try:
        yield
    finally:
        await batcher.stop()
        engine.close()  # closes the Elasticsearch client and the store


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
    app = FastAPI(title="regrad", version=__version__, description=_DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine_factory = engine_factory or _default_engine_factory
    app.state.metrics = metrics = ServiceMetrics()
    install_error_handlers(app, settings.retry_after_s)

    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=error)
        return JSONResponse(
            status_code=500, content={"detail": f"internal error ({type(error).__name__}); see the server log"}
        )

    app.add_exception_handler(Exception, internal_error)
    app.include_router(answer.router)
    app.include_router(documents.router)
    app.include_router(health.router)
    app.add_middleware(_RequestMetricsMiddleware, metrics=metrics)
    _install_openapi_limits(app, settings)
    return app
