"""Idempotency keys: a repeated submit within the window returns the first job."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from imagefleet.store.tables import idempotency_keys


def find_idempotent(
    conn: Connection, owner_key_id: str, key: str, since: float
) -> tuple[str, str] | None:
    """(request hash, job id) of a submit made with this key after `since`, if any."""
    row = conn.execute(
        select(idempotency_keys.c.request_hash, idempotency_keys.c.job_id).where(
            idempotency_keys.c.owner_key_id == owner_key_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.created_at >= since,
        )
    ).first()
    return (row.request_hash, row.job_id) if row else None


def remember_idempotent(
    conn: Connection, owner_key_id: str, key: str, request_hash: str, job_id: str, now: float
) -> None:
    """Records the submit; an expired entry under the same key is replaced."""
    conn.execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.owner_key_id == owner_key_id, idempotency_keys.c.key == key
        )
    )
    conn.execute(
        insert(idempotency_keys).values(
            owner_key_id=owner_key_id,
            key=key,
            request_hash=request_hash,
            job_id=job_id,
            created_at=now,
        )
    )
