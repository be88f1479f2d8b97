"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from imagefleet.errors import Forbidden, QuotaExceeded, Unauthorized
from imagefleet.store.keys import ApiKey, Scope, authenticate

_bearer = HTTPBearer(auto_error=False, description="An imagefleet API key: `if_<id>_<secret>`.")

# The dashboard's login (routes_ui.py) keeps the key in this HttpOnly cookie, which no script can
# read. A request may authenticate with it instead of a Bearer header; one that changes anything
# must also carry SESSION_HEADER, which a cross-site page cannot send without a CORS preflight
# this server never grants (the cookie is SameSite=Strict besides).
SESSION_COOKIE = "imagefleet_session"
SESSION_HEADER = "X-Imagefleet-Dashboard"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The token a request authenticates with: its Bearer header, else the dashboard cookie."""
    if credentials is not None:
        return credentials.credentials
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    if request.method not in _SAFE_METHODS and SESSION_HEADER.lower() not in request.headers:
        raise Forbidden(
            f"a dashboard session must send the {SESSION_HEADER} header to change state"
        )
    return cookie


# Which key scopes may call endpoints of each audience. An admin may act as a client; nobody
# but a worker key may act as a worker, so a leaked client key cannot steal or fake work.
_ALLOWED: dict[str, frozenset[Scope]] = {
    "client": frozenset({"client", "admin"}),
    "worker": frozenset({"worker"}),
    "admin": frozenset({"admin"}),
}


def require(audience: str) -> Callable[..., object]:
    allowed = _ALLOWED[audience]

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> ApiKey:
        token = presented_key(request, credentials)
        db = request.app.state.db

        def lookup() -> ApiKey | None:
            with db.read() as conn:
                return authenticate(conn, token)

        key = await run_in_threadpool(lookup)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        if key.scope not in allowed:
            article = "an" if audience[0] in "aeiou" else "a"
            raise Forbidden(
                f"this endpoint needs {article} {audience} key; this key's scope is {key.scope!r}"
            )
        if audience == "client":
            wait = request.app.state.rate_limiter.check(key.id, time.monotonic())
            if wait:
                raise QuotaExceeded(
                    "rate limit exceeded for this key; slow down", retry_after=math.ceil(wait)
                )
        return key

    return dependency


client_key = require("client")
worker_key = require("worker")
admin_key = require("admin")
