"""API keys: created, looked up by their public id, revoked. Only a hash of the secret is stored.

A key reads `if_<id>_<secret>`; the secret is 32 random bytes, so one SHA-256 is enough (a slow
password hash protects low-entropy human passwords, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, insert, select, update

from imagefleet.store.tables import api_keys

# `deploy` (issue 15): a client key that may also deploy (see orchestrator/deployments.py).
Scope = Literal["client", "worker", "admin", "deploy"]
SCOPES: tuple[Scope, ...] = ("client", "worker", "admin", "deploy")
KEY_PREFIX = "if_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: Scope
    tier: str
    created_at: float
    revoked_at: float | None
    webhook_secret: str | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    conn: Connection, *, name: str, scope: Scope, tier: str, now: float
) -> tuple[ApiKey, str]:
    """Stores a new key and returns it with the full token, which is shown once and never again."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    # Signing webhooks needs the secret itself, so unlike the key it is stored as is: it
    # proves a delivery came from us, it grants no access to the API.
    webhook_secret = secrets.token_hex(32)
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            name=name,
            scope=scope,
            tier=tier,
            secret_hash=_hash(secret),
            webhook_secret=webhook_secret,
            created_at=now,
        )
    )
    key = ApiKey(key_id, name, scope, tier, now, None, webhook_secret)
    return key, f"{KEY_PREFIX}{key_id}_{secret}"


def authenticate(conn: Connection, token: str) -> ApiKey | None:
    """The live key this token belongs to, or None for a malformed, unknown or revoked token."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(row["secret_hash"], _hash(secret)):
        return None
    return _to_key(row)


def list_keys(conn: Connection) -> list[ApiKey]:
    rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings()
    return [_to_key(row) for row in rows]


def revoke_key(conn: Connection, key_id: str, now: float) -> bool:
    """Revokes a live key; False when no live key has that id."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def _to_key(row: object) -> ApiKey:
    r = dict(row)  # type: ignore[call-overload]
    return ApiKey(
        r["id"],
        r["name"],
        r["scope"],
        r["tier"],
        r["created_at"],
        r["revoked_at"],
        r["webhook_secret"],
    )
