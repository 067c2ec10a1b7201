"""The page at / (try every mode side by side, add a document) and the API docs (/docs, /redoc),
all served from the package: no CDN, nothing fetched from the internet.

The page is static (service/static/); it reads the modes from GET /page/config and calls the public
API (POST /answer streamed, POST /documents) like any client. Swagger UI's and ReDoc's files come from
the `fastapi-offline` wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from engine.modes import MODES
from service.deps import EngineDep, SettingsDep
from service.routes.openai import served_model_id
from service.schemas import MAX_GAMMA, MAX_TOP_K

__all__ = ["router", "mount_static", "STATIC_DIR", "DOCS_ASSETS_DIR"]

STATIC_DIR = Path(str(files("service") / "static"))
DOCS_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))  # swagger-ui-bundle.js, swagger-ui.css, redoc
_FAVICON = "/static/favicon.svg"

router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    """The page's files under /static, Swagger UI's and ReDoc's under /static/docs."""
    app.mount("/static/docs", StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/page/config")
async def page_config(engine: EngineDep, settings: SettingsDep) -> dict:
    """What the page needs to draw its form: the modes (the engine's table) and the limits."""
    return {
        "model": served_model_id(settings),
        "learner": getattr(engine, "fingerprint", ""),
        "modes": [{"name": name, "description": spec.description, "gradients": spec.gradients,
                   "retrieve": spec.retrieve, "context": spec.context} for name, spec in MODES.items()],
        "max_top_k": MAX_TOP_K,
        "max_gamma": MAX_GAMMA,
        "needs_api_key": settings.api_key is not None,
    }


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        swagger_js_url=f"{root}/static/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/docs/swagger-ui.css", swagger_favicon_url=f"{root}{_FAVICON}",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/static/docs/redoc.standalone.js", redoc_favicon_url=f"{root}{_FAVICON}",
        with_google_fonts=False,
    )
