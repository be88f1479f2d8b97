"""The job event log: rows written in the same transaction as the state change they tell of,
read back in id order by the progress streams.

Writing an event also wakes the streams waiting for it: on PostgreSQL with a NOTIFY on the
events channel, sent by the row's own insert trigger (migration 0015; delivered at commit, so
to every replica and never before the row is visible), and in this process by leaving the
(job, owner) pair in the connection's info for `Database.write` to hand to its commit hooks
once the transaction committed (the SQLite case, where no NOTIFY exists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from imagefleet.store.database import AFTER_COMMIT
from imagefleet.store.tables import job_events

# Built once: every transition records an event, and building the statement cost several
# times what running it does (docs/benchmarks.md, "Statements built once").
_INSERT = insert(job_events)


@dataclass(frozen=True)
class EventRow:
    id: int
    job_id: str
    owner_key_id: str
    event: str
    data: dict[str, Any]
    created_at: float


def record(
    conn: Connection,
    *,
    job_id: str,
    owner_key_id: str,
    event: str,
    data: dict[str, Any],
    now: float,
) -> None:
    """Appends one event to the job's log and wakes its listeners once the caller commits."""
    conn.execute(
        _INSERT,
        {
            "job_id": job_id,
            "owner_key_id": owner_key_id,
            "event": event,
            "data": dumps(data),
            "created_at": now,
        },
    )
    wake_after_commit(conn, job_id, owner_key_id)


def dumps(data: dict[str, Any]) -> str:
    """An event's data as stored."""
    return json.dumps(data, separators=(",", ":"))


def wake_after_commit(conn: Connection, job_id: str, owner_key_id: str) -> None:
    """Leaves the (job, owner) pair for `Database.write`'s commit hooks: this process's streams
    wake once the transaction committed. `record` does it for each event it writes; the
    folded statements (`store.folded*`), which write their events themselves, call it."""
    conn.info.setdefault(AFTER_COMMIT, []).append((job_id, owner_key_id))


def for_job(conn: Connection, job_id: str, after: int, limit: int = 200) -> list[EventRow]:
    """The job's events with an id above `after`, oldest first."""
    query = (
        select(job_events)
        .where(job_events.c.job_id == job_id, job_events.c.id > after)
        .order_by(job_events.c.id)
        .limit(limit)
    )
    return [_row(row) for row in conn.execute(query).mappings()]


def for_owner(conn: Connection, owner_key_id: str, after: int, limit: int = 200) -> list[EventRow]:
    """Events of every job of this key with an id above `after`, oldest first."""
    query = (
        select(job_events)
        .where(job_events.c.owner_key_id == owner_key_id, job_events.c.id > after)
        .order_by(job_events.c.id)
        .limit(limit)
    )
    return [_row(row) for row in conn.execute(query).mappings()]


def last_id_for_owner(conn: Connection, owner_key_id: str) -> int:
    """The newest event id of this key's jobs (0 when none): where a live feed starts."""
    value = conn.execute(
        select(func.max(job_events.c.id)).where(job_events.c.owner_key_id == owner_key_id)
    ).scalar()
    return int(value or 0)


def _row(row: Any) -> EventRow:
    return EventRow(
        id=row["id"],
        job_id=row["job_id"],
        owner_key_id=row["owner_key_id"],
        event=row["event"],
        data=json.loads(row["data"]),
        created_at=row["created_at"],
    )
