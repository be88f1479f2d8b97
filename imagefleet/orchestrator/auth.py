"""Bearer-key authentication and scope checks, as FastAPI dependencies.

Keys live in the database, but a request does not read them there every time: a replica
keeps the keys it looked up for `key_cache_seconds` (5 s by default), so the common request
costs no query and no thread hop. The price is stated in docs/operations.md: a revoked key
keeps working on a replica that cached it for at most that long.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imagefleet.blocking import run_blocking
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
    "client": frozenset({"client", "admin", "deploy"}),
    "worker": frozenset({"worker"}),
    "admin": frozenset({"admin"}),
}


class KeyCache:
    """Live keys this replica looked up recently, by a hash of the full token (the token
    itself is never kept). Only keys that authenticated are cached: an unknown or revoked
    token is looked up again every time, so a new key works at once and guessing costs a
    query each. Bounded: past `max_entries` the whole cache is dropped (a few misses)."""

    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> ApiKey | None:
        """The cached key for this token while its entry is fresh, else None."""
        if self.ttl_seconds <= 0:
            return None
        digest = self._digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self.clock() >= entry[0]:
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, token: str, key: ApiKey) -> None:
        if self.ttl_seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[self._digest(token)] = (self.clock() + self.ttl_seconds, key)

    def forget(self, key_id: str) -> None:
        """Drops every entry of this key (a revocation made through this replica)."""
        with self._lock:
            for digest in [d for d, (_, key) in self._entries.items() if key.id == key_id]:
                del self._entries[digest]


async def check_key(request: Request, token: str | None, audience: str) -> ApiKey:
    """The key `token` names, if it may call an endpoint of `audience` (and, for clients,
    is within its rate limit): shared by the Bearer dependency below and the compatibility
    APIs, which also accept the key as an HTTP Basic password."""
    allowed = _ALLOWED[audience]
    if token is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    cache: KeyCache = request.app.state.key_cache
    key = cache.get(token)
    if key is None:
        db = request.app.state.db

        def lookup() -> ApiKey | None:
            with db.read() as conn:
                return authenticate(conn, token)

        key = await run_blocking(lookup)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        cache.put(token, key)
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
        return await check_key(request, presented_key(request, credentials), audience)

    return dependency


client_key = require("client")
worker_key = require("worker")
admin_key = require("admin")
