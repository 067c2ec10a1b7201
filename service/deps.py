"""Dependencies of the routes, one `Annotated` alias each, so route signatures stay one line.

The shared state lives on `app.state` (set by the lifespan); tests swap any of it through
`app.dependency_overrides[get_engine] = ...`.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.batching import ContinuousBatcher, MicroBatcher
from service.metrics import ServiceMetrics
from service.settings import Settings

__all__ = [
    "get_settings",
    "get_engine",
    "get_batcher",
    "get_metrics",
    "require_api_key",
    "SettingsDep",
    "EngineDep",
    "BatcherDep",
    "MetricsDep",
    "ApiKeyDep",
]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Any:
    """The QA engine (`engine.Engine`, or a test double with the same methods)."""
    return request.app.state.engine


def get_batcher(request: Request) -> MicroBatcher | ContinuousBatcher:
    return request.app.state.batcher


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Any, Depends(get_engine)]
BatcherDep = Annotated[MicroBatcher | ContinuousBatcher, Depends(get_batcher)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]

# auto_error=False: a missing key is only an error when a key is configured (checked below).
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service API key")
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


def require_api_key(
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    """401 unless the configured API key (if any) came as `X-API-Key` or `Authorization: Bearer`."""
    if settings.api_key is None:
        return
    given = api_key if api_key is not None else (bearer.credentials if bearer is not None else None)
    expected = settings.api_key.get_secret_value()
    # Compare bytes: compare_digest refuses non-ASCII str, and headers can carry any latin-1 text.
    if given is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key; send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKeyDep = Annotated[None, Depends(require_api_key)]
