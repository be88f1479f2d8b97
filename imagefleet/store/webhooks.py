"""The webhook outbox: deliveries written in the same transaction as the job's state change,
then taken in batches by a dispatcher, retried, and kept as the delivery log."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from imagefleet.store.tables import api_keys, webhook_deliveries

deliveries = webhook_deliveries


@dataclass(frozen=True)
class Delivery:
    id: int
    job_id: str
    event: str
    url: str
    payload: str
    attempts: int
    next_attempt_at: float
    delivered_at: float | None
    gave_up_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    secret: str | None = None


def enqueue(
    conn: Connection,
    *,
    job_id: str,
    owner_key_id: str,
    event: str,
    url: str,
    payload: dict[str, Any],
    now: float,
) -> None:
    conn.execute(
        insert(deliveries).values(
            job_id=job_id,
            owner_key_id=owner_key_id,
            event=event,
            url=url,
            payload=json.dumps(payload, separators=(",", ":")),
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def take_due(conn: Connection, now: float, lease_seconds: float, limit: int) -> list[Delivery]:
    """Due deliveries, leased for `lease_seconds`: if this replica dies while sending, another
    takes them again after the lease (at-least-once delivery). SKIP LOCKED on PostgreSQL keeps
    replicas from taking the same batch."""
    due = list(
        conn.execute(
            select(deliveries.c.id)
            .where(
                deliveries.c.delivered_at.is_(None),
                deliveries.c.gave_up_at.is_(None),
                deliveries.c.next_attempt_at <= now,
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not due:
        return []
    conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(due))
        .values(next_attempt_at=now + lease_seconds)
    )
    rows = conn.execute(
        select(deliveries, api_keys.c.webhook_secret.label("secret"))
        .join(api_keys, api_keys.c.id == deliveries.c.owner_key_id)
        .where(deliveries.c.id.in_(due))
    ).mappings()
    return [_delivery(row) for row in rows]


def record_attempt(
    conn: Connection,
    delivery_id: int,
    *,
    now: float,
    status: int | None,
    error: str | None,
    retry_at: float | None,
) -> None:
    """Delivered when `error` is None; else scheduled again at `retry_at`, or given up (None)."""
    values: dict[str, Any] = {
        "attempts": deliveries.c.attempts + 1,
        "last_status": status,
        "last_error": error,
    }
    if error is None:
        values["delivered_at"] = now
    elif retry_at is None:
        values["gave_up_at"] = now
    else:
        values["next_attempt_at"] = retry_at
    conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))


def for_job(conn: Connection, job_id: str) -> list[Delivery]:
    rows = conn.execute(
        select(deliveries).where(deliveries.c.job_id == job_id).order_by(deliveries.c.id)
    ).mappings()
    return [_delivery(row) for row in rows]


def _delivery(row: Any) -> Delivery:
    values = {key: row[key] for key in Delivery.__dataclass_fields__ if key in row}
    return Delivery(**values)
