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

# Which key scopes may call endpoints of each audience. An admin may act as a client; nobody
# but a worker key may act as a worker, so a leaked client key cannot steal or fake work.
_ALLOWED: dict[str, frozenset[Scope]] = {
    "client": frozenset({"client", "admin"}),
    "worker": frozenset({"worker"}),
    "admin": frozenset({"admin"}),
}


async def check_key(request: Request, token: str | None, audience: str) -> ApiKey:
    """The key `token` names, if it may call an endpoint of `audience` (and, for clients,
    is within its rate limit): shared by the Bearer dependency below and the compatibility
    APIs, which also accept the key as an HTTP Basic password."""
    allowed = _ALLOWED[audience]
    if token is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
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


def require(audience: str) -> Callable[..., object]:
    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> ApiKey:
        return await check_key(request, credentials.credentials if credentials else None, audience)

    return dependency


client_key = require("client")
worker_key = require("worker")
admin_key = require("admin")
