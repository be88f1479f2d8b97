"""Bearer-key authentication and scope checks, as FastAPI dependencies."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from imagefleet.store.keys import ApiKey, Scope, authenticate

_bearer = HTTPBearer(auto_error=False, description="An imagefleet API key: `if_<id>_<secret>`.")

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
        if credentials is None:
            raise HTTPException(
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        db = request.app.state.db

        def lookup() -> ApiKey | None:
            with db.read() as conn:
                return authenticate(conn, credentials.credentials)

        key = await run_in_threadpool(lookup)
        if key is None:
            raise HTTPException(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if key.scope not in allowed:
            raise HTTPException(
                403,
                f"this endpoint needs {'an' if audience[0] in 'aeiou' else 'a'} {audience} key; "
                f"this key's scope is {key.scope!r}",
            )
        if audience == "client":
            wait = request.app.state.rate_limiter.check(key.id, time.monotonic())
            if wait:
                raise HTTPException(
                    429,
                    "rate limit exceeded for this key; slow down",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return key

    return dependency


client_key = require("client")
worker_key = require("worker")
admin_key = require("admin")
