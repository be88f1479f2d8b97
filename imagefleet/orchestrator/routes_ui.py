"""The dashboard at /ui: its static files, and the login session that keeps the API key in an
HttpOnly cookie.

Why a cookie and not sessionStorage: a key in sessionStorage is readable by every script of
the origin (the API docs pages included), and an `<img>` cannot send a Bearer header, so every
output would have to be fetched by script. An HttpOnly, SameSite=Strict cookie is sent by the
browser alone and read by no script; state-changing calls made with it must also carry
`X-Imagefleet-Dashboard` (see auth.py), which a cross-site page cannot add. The key never
appears in a URL, so it is in no access log.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from imagefleet.dashboard.protocol import SessionRequest, SessionView
from imagefleet.errors import Forbidden, NotFound, Unauthorized
from imagefleet.orchestrator.auth import SESSION_COOKIE
from imagefleet.orchestrator.deps import ClientKey, Db
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.store.keys import ApiKey, authenticate

STATIC_DIR = Path(__file__).resolve().parent.parent / "dashboard" / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only files shipped in the package, by exact name: nothing of the request reaches a path.
ASSETS = {
    p.name: CONTENT_TYPES[p.suffix]
    for p in STATIC_DIR.iterdir()
    if p.is_file() and p.suffix in CONTENT_TYPES
}
SESSION_SECONDS = 12 * 3600
# Scripts and styles from this server only; images also from a presigned artifact store URL.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: *; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

pages = APIRouter(include_in_schema=False)
session = APIRouter(prefix="/v1/dashboard", tags=["dashboard"], route_class=DocumentedRoute)


@pages.get("/ui")
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@pages.get("/ui/")
def dashboard_slash(request: Request) -> RedirectResponse:
    """The page's links are relative to `/ui`, so `/ui/` goes there."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/ui", status_code=308)


@pages.get("/ui/static/{name}")
def static_file(name: str) -> FileResponse:
    if name not in ASSETS:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=ASSETS[name], headers=PAGE_HEADERS)


def _view(key: ApiKey) -> SessionView:
    return SessionView(key_id=key.id, name=key.name, scope=key.scope, tier=key.tier)


@session.post(
    "/session",
    response_model=SessionView,
    summary="Log in to the dashboard: the key comes back as an HttpOnly cookie",
)
async def login(request: Request, body: SessionRequest, response: Response, db: Db) -> SessionView:
    def lookup() -> ApiKey | None:
        with db.read() as conn:
            return authenticate(conn, body.key)

    key = await run_in_threadpool(lookup)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    if key.scope not in ("client", "admin"):
        raise Forbidden(
            f"the dashboard needs a client or admin key; this key's scope is {key.scope!r}"
        )
    response.set_cookie(
        SESSION_COOKIE,
        body.key,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return _view(key)


@session.get("/session", response_model=SessionView, summary="Who the dashboard session is")
def whoami(key: ClientKey) -> SessionView:
    return _view(key)


@session.delete("/session", status_code=204, summary="Log out: the session cookie is cleared")
def logout() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
