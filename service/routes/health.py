"""GET /healthz (process up), GET /readyz (model, retriever, store), GET /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import EngineDep, MetricsDep, SettingsDep
from service.metrics import CONTENT_TYPE_LATEST

__all__ = ["router", "READY_TIMEOUT_S"]

router = APIRouter(tags=["health"])

# A readiness probe that hangs is worse than one that says "not ready".
READY_TIMEOUT_S = 5.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Model loaded, retriever reachable, store open and matching the learner",
    responses={503: {"description": "a component is not ready; `failing` names it"}},
)
async def readyz(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    try:
        components = await asyncio.wait_for(asyncio.to_thread(engine.readiness), READY_TIMEOUT_S)
    except TimeoutError:
        components = {"engine": f"readiness check took over {READY_TIMEOUT_S:g} s"}
    failing = sorted(name for name, state in components.items() if state != "ok")
    if failing:
        return JSONResponse(
            status_code=503,
            content={"status": "not ready", "failing": failing, "components": components},
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    return JSONResponse({"status": "ready", "failing": [], "components": components})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)
