"""Service errors and their HTTP mapping: 503 + Retry-After for outages, 409 for conflicts.

A client never sees a 500 for something it sent: bad input is refused by the schemas (422 naming
the field) before any model work starts; outages are 503 with `Retry-After`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import DocumentConflictError  # 409; raised by the engine, re-exported here
from gradient_store.errors import StoreLockedError
from retrieval.errors import BackendUnavailableError, IndexNotFoundError
from service.batching import BatcherStoppedError, QueueFullError

__all__ = [
    "ServiceError",
    "DocumentConflictError",
    "is_unavailable",
    "install_error_handlers",
    "openai_shaped",
    "openai_error_body",
]

logger = logging.getLogger("regrad.service")


class ServiceError(Exception):
    """Base class of errors raised by `service/`."""


_UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's detail for an undecodable body
_ECHO_CHARS = 200  # of a rejected input echoed back in a 422
# StoreLockedError: POST /documents found another process (a `regrad encode` run) writing the store.
_UNAVAILABLE = (BackendUnavailableError, IndexNotFoundError, QueueFullError, BatcherStoppedError, StoreLockedError)


def is_unavailable(error: BaseException) -> bool:
    """True for errors that mean "try again later" (HTTP 503)."""
    return isinstance(error, _UNAVAILABLE)


def _component(error: BaseException) -> str:
    if isinstance(error, BackendUnavailableError | IndexNotFoundError):
        return "retriever"
    if isinstance(error, StoreLockedError):
        return "store"
    return "queue"


def _json_safe(value: Any) -> Any:
    """The echoed input of a 422, made valid JSON: NaN/Infinity become strings and lone surrogates
    (legal in JSON's \\u escapes, illegal in UTF-8) become escapes, where the default handler would fail
    to encode them and answer 500; long strings are cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        if len(value) > _ECHO_CHARS:
            value = value[:_ECHO_CHARS] + "..."
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(str(key)): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


# OpenAI's error `type` per status (what its SDKs and the tools built on them expect under /v1).
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 409: "conflict_error", 429: "rate_limit_error", 503: "service_unavailable_error"}
_OPENAI_PREFIX = "/v1/"

Handler = Callable[[Request, Exception], Awaitable[Response]]


def openai_error_body(status: int, detail: Any) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}` for a status and a FastAPI `detail` (a string, or
    the 422 list, whose first error's field becomes `param`)."""
    param = None
    if isinstance(detail, list):
        parts = []
        for error in detail:
            loc = [str(p) for p in error.get("loc", []) if p != "body"]
            param = param or (".".join(loc) or None)
            parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
        message = "; ".join(parts)
    else:
        message = str(detail)
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def openai_shaped(handler: Handler) -> Handler:
    """`handler`, its JSON error bodies reshaped to OpenAI's under /v1/ (status and headers kept)."""

    async def shaped(request: Request, error: Exception) -> Response:
        response = await handler(request, error)
        if not request.url.path.startswith(_OPENAI_PREFIX) or not isinstance(response, JSONResponse):
            return response
        detail = json.loads(bytes(response.body)).get("detail", "error")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return JSONResponse(status_code=response.status_code, content=openai_error_body(response.status_code, detail),
                            headers=headers)

    return shaped


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    """Register the handlers that turn service and backend errors into 422 / 503 / 409 responses."""

    async def invalid_request(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(error.errors()))})

    async def unavailable(_: Request, error: Exception) -> JSONResponse:
        wait_s = max(1, int(round(getattr(error, "retry_after_s", retry_after_s) or retry_after_s)))
        logger.warning("503 %s: %s", _component(error), error)
        return JSONResponse(
            status_code=503,
            content={"detail": str(error), "component": _component(error)},
            headers={"Retry-After": str(wait_s)},
        )

    async def conflict(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(error), "component": "documents"})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        # FastAPI answers 400 for a body it cannot even decode (not UTF-8); to a client that is
        # invalid JSON like any other, so it gets the same 422 pointing at the body.
        if error.status_code == 400 and error.detail == _UNPARSABLE_BODY:
            return JSONResponse(
                status_code=422,
                content={"detail": [{"type": "json_invalid", "loc": ["body"], "input": None,
                                     "msg": "the body is not valid UTF-8 JSON; send a JSON object"}]},
            )
        return await http_exception_handler(request, error)

    app.add_exception_handler(RequestValidationError, openai_shaped(invalid_request))
    app.add_exception_handler(StarletteHTTPException, openai_shaped(http_error))
    for error_type in _UNAVAILABLE:
        app.add_exception_handler(error_type, openai_shaped(unavailable))
    app.add_exception_handler(DocumentConflictError, openai_shaped(conflict))
