"""The dashboard at /ui: its static files, and the login session that keeps the API key in an
HttpOnly cookie.

Logging in is one POST with the key as a Bearer header (not in a URL, so in no access log).
Why a cookie and not sessionStorage: a key in sessionStorage is readable by every script of
the origin (the API docs pages included), and an `<img>` cannot send a Bearer header, so every
output would have to be fetched by script. An HttpOnly, SameSite=Strict cookie is sent by the
browser alone and read by no script; state-changing calls made with it must also carry
`X-Imagefleet-Dashboard` (see auth.py), which a cross-site page cannot add.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from imagefleet.dashboard.protocol import SessionView
from imagefleet.errors import NotFound, Unauthorized
from imagefleet.orchestrator.auth import SESSION_COOKIE
from imagefleet.orchestrator.deps import ClientKey
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.store.keys import ApiKey

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
    summary="Log in to the dashboard: the Bearer key comes back as an HttpOnly cookie",
)
def login(request: Request, key: ClientKey, response: Response) -> SessionView:
    """Authenticated like any client call (a worker key gets 403); the key is then set as the
    session cookie, so the page never has to hold it."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("log in with `Authorization: Bearer <key>`")
    response.set_cookie(
        SESSION_COOKIE,
        token,
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
def logout(key: ClientKey) -> Response:
    """Like every /v1 call it needs a live key (the cookie itself, usually); a session whose key
    was revoked is over anyway, and its cookie is replaced at the next login."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
