"""Owners' last claims, read and written in the claim transaction (see `tables_scheduling`), and
how many jobs each has running (for the share its tier head start covers)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imagefleet.protocol import JobStatus
from imagefleet.store.tables import jobs
from imagefleet.store.tables_scheduling import owner_service

# Built once with bound parameters (see store/jobs.py): every claim records a turn.
_MINE_UNLOCKED = (
    select(owner_service.c.owner_key_id)
    .where(
        owner_service.c.owner_key_id == bindparam("owner"),
        owner_service.c.served_at < bindparam("now"),
    )
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
PG_MOVE = (
    update(owner_service)
    .where(owner_service.c.owner_key_id == _MINE_UNLOCKED)
    .values(served_at=bindparam("now"))
)
_PG_NEW = (
    pg_insert(owner_service)
    .values(owner_key_id=bindparam("owner"), served_at=bindparam("now"))
    .on_conflict_do_nothing(index_elements=[owner_service.c.owner_key_id])
)
_SQLITE_UPSERT = sqlite_insert(owner_service).values(
    owner_key_id=bindparam("owner"), served_at=bindparam("now")
)
_SQLITE_UPSERT = _SQLITE_UPSERT.on_conflict_do_update(
    index_elements=[owner_service.c.owner_key_id],
    set_={"served_at": _SQLITE_UPSERT.excluded.served_at},
    where=_SQLITE_UPSERT.excluded.served_at > owner_service.c.served_at,
)


def served_at(conn: Connection, owners: Collection[str]) -> dict[str, float]:
    """When each of `owners` last had a job claimed (by any replica); absent if never. A primary
    key lookup per owner: a claim's candidates have a few dozen owners at most."""
    if not owners:
        return {}
    rows = conn.execute(
        select(owner_service.c.owner_key_id, owner_service.c.served_at).where(
            owner_service.c.owner_key_id.in_(sorted(set(owners)))
        )
    ).all()
    return {row.owner_key_id: row.served_at for row in rows}


def running_jobs(conn: Connection, owners: Collection[str]) -> dict[str, int]:
    """How many jobs each of `owners` has claimed and not finished; absent if none. One range of
    `ix_jobs_owner_status` per owner: bounded by its running jobs (at most the fleet), never by
    its queued ones."""
    if not owners:
        return {}
    rows = conn.execute(
        select(jobs.c.owner_key_id, func.count())
        .where(
            jobs.c.owner_key_id.in_(sorted(set(owners))),
            jobs.c.status == JobStatus.running.value,
        )
        .group_by(jobs.c.owner_key_id)
    ).all()
    return {owner: int(count) for owner, count in rows}


def record_served(conn: Connection, owner: str, now: float) -> None:
    """`owner` just had a job claimed; the later time wins, never moving an owner's turn back.

    On PostgreSQL the owner's row is updated through a SKIP LOCKED subquery, one statement:
    when another claim of the same owner holds the row, that claim is recording the same turn
    at the same moment, and waiting for its commit would line up every claim of a one-owner
    burst behind one row. When nothing was updated, a new owner's row is inserted with ON
    CONFLICT DO NOTHING, which waits for no committed row either."""
    params = {"owner": owner, "now": now}
    if conn.dialect.name == "postgresql":
        if conn.execute(PG_MOVE, params).rowcount == 0:
            # New, taken by another claim, or already later: the insert does nothing for an
            # existing row, and waits for no committed one.
            conn.execute(_PG_NEW, params)
        return
    conn.execute(_SQLITE_UPSERT, params)
