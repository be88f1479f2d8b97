"""Credentials as ComfyUI clients send them: many have no notion of an API key, so the key is
accepted as a Bearer token, as the password of HTTP Basic auth (any user name; what clients
with a `user`/`password` setting send), or as a `token` query parameter (for websockets, which
browsers cannot give headers). Without one of them nothing is answered: 401."""

from __future__ import annotations

import base64
import binascii
import math
import time

from fastapi import Request, WebSocket
from starlette.requests import HTTPConnection

from imagefleet.blocking import run_blocking
from imagefleet.errors import Forbidden, QuotaExceeded, Unauthorized
from imagefleet.store.keys import ApiKey, authenticate

CLIENT_SCOPES = ("client", "admin", "deploy")


def presented_token(connection: HTTPConnection) -> str | None:
    """The key in the Authorization header (Bearer or Basic password) or `token` query."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return connection.query_params.get("token") or None


async def lookup(connection: HTTPConnection) -> ApiKey:
    """The client key presented, or Unauthorized / Forbidden."""
    token = presented_token(connection)
    if token is None:
        raise Unauthorized(
            "missing API key: send it as `Authorization: Bearer <key>`, as the HTTP Basic "
            "password, or as ?token=<key>"
        )
    db = connection.app.state.db

    def find() -> ApiKey | None:
        with db.read() as conn:
            return authenticate(conn, token)

    key = await run_blocking(find)
    if key is None:
        raise Unauthorized("invalid or revoked API key")
    if key.scope not in CLIENT_SCOPES:
        raise Forbidden(f"this endpoint needs a client key; this key's scope is {key.scope!r}")
    return key


async def comfy_client_key(request: Request) -> ApiKey:
    """The route dependency: a client key, rate limited like every client call."""
    key = await lookup(request)
    wait = request.app.state.rate_limiter.check(key.id, time.monotonic())
    if wait:
        raise QuotaExceeded("rate limit exceeded for this key; slow down", math.ceil(wait))
    return key


async def websocket_key(websocket: WebSocket) -> ApiKey | None:
    """The websocket's client key, or None (the handshake is then refused)."""
    try:
        return await lookup(websocket)
    except (Unauthorized, Forbidden):
        return None
