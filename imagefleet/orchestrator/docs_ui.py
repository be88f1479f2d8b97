"""Interactive API docs (/docs with Swagger UI, /redoc with ReDoc) that work offline.

FastAPI's own pages load their JavaScript, CSS, favicon and fonts from public CDNs, so on a
machine without internet (an air-gapped cluster, a laptop on a plane) they render a blank page.
These pages are the same, with every asset served by the orchestrator itself from the files
the `fastapi-offline` package ships (Swagger UI is Apache-2.0, ReDoc MIT; their licences travel
with that package). Swagger UI's online validator badge, which would call out, is turned off.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from imagefleet.errors import NotFound

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_ROUTE = "/docs-assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSET_MAX_AGE_SECONDS = 24 * 3600

router = APIRouter(include_in_schema=False)


def _asset_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{ASSETS_ROUTE}/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_asset_url(request, "favicon.png"),
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset_url(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset_url(request, "favicon.png"),
        with_google_fonts=False,
    )


@router.get(f"{ASSETS_ROUTE}/{{name}}")
def asset(name: str) -> FileResponse:
    """One of the known asset files; any other name is a 404 (no paths from the request)."""
    if name not in ASSETS:
        raise NotFound(f"no docs asset {name!r}")
    return FileResponse(
        ASSETS_DIR / name,
        media_type=ASSETS[name],
        headers={"Cache-Control": f"public, max-age={ASSET_MAX_AGE_SECONDS}"},
    )
