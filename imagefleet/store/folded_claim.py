"""A claim's writes, folded into one statement on PostgreSQL (see `store.folded`): the job's
compare-and-set UPDATE, its attempt row, its running event and its owner's turn."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    Connection,
    Text,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    select,
)

from imagefleet.protocol import JobStatus
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import events as event_sql
from imagefleet.store import job_statements
from imagefleet.store import jobs as job_sql
from imagefleet.store import owner_service as served_sql
from imagefleet.store.folded import event_rows, insert_events, record_event
from imagefleet.store.tables import attempts
from imagefleet.store.tables_scheduling import owner_service


class Taken(NamedTuple):
    """A claimed job as its claim left it (`attempts` is the new attempt's number), and whether
    its owner's turn needs no statement of its own (`owner_service.record_served`): the claim's
    statement moved it, or the owner's row exists and was not moved because another claim of
    the same owner holds it (recording the same turn at the same moment) or it is already
    later; record_served would do no more (its update skips the held row too, and its insert
    does nothing for an existing one)."""

    row: job_sql.JobRow
    turn_recorded: bool


def take(
    conn: Connection,
    job_id: str,
    attempt: dict[str, Any],
    *,
    lease_expires_at: float,
    placement: str | None,
    now: float,
    owner_turn: str | None,
) -> Taken | None:
    """queued -> running for one job (`jobs.claim_job`, the compare-and-set), its attempt row
    (`attempts.insert_attempt` with `attempt`'s values; its number is the job's new attempt
    count) and its running event; with `owner_turn` (the job's owner), on PostgreSQL, that
    owner's turn moved too when no other claim holds its row (`turn_recorded`; the caller
    records it otherwise). One statement on PostgreSQL; None when another claimer
    took the job first (nothing written)."""
    if conn.dialect.name != "postgresql":
        row = job_sql.claim_job(
            conn,
            job_id,
            attempt_id=attempt["attempt_id"],
            lease_expires_at=lease_expires_at,
            now=now,
            placement=placement,
        )
        if row is None:
            return None
        attempt_sql.insert_attempt(conn, **attempt, job_id=row.id, seq=row.attempts, now=now)
        data = running_data(row.attempts)
        record_event(conn, row.id, row.owner_key_id, JobStatus.running.value, data, now)
        return Taken(row, False)
    params = {
        "job": job_id,
        "attempt": attempt["attempt_id"],
        "lease": lease_expires_at,
        "now": now,
        "why": placement,
        "worker": attempt["worker_id"],
        "node": attempt["node_id"],
        "worker_key": attempt["worker_key_id"],
        "pool": attempt.get("pool"),
        "gpu": attempt.get("gpu"),
        "model_cache": attempt.get("model_cache"),
        "owner": owner_turn or "",
        "owner_turn": owner_turn is not None,
    }
    found = conn.execute(_TAKE, params).mappings().first()
    if found is None:
        return None
    values = dict(found)
    moved, known = bool(values.pop("turn_recorded")), bool(values.pop("owner_known"))
    turn = moved or (owner_turn is not None and known)
    row = job_sql.to_job(values)
    event_sql.wake_after_commit(conn, row.id, row.owner_key_id)
    return Taken(row, turn)


def running_data(attempt: int) -> dict[str, Any]:
    """A running event's data (the PostgreSQL statement builds the same in SQL)."""
    return {"status": JobStatus.running.value, "attempt": attempt}


def _build_take() -> Any:
    claimed = job_statements.CLAIM.cte("claimed")
    attempt = insert(attempts).from_select(
        [
            "id",
            "job_id",
            "seq",
            "worker_id",
            "node_id",
            "worker_key_id",
            "started_at",
            "outcome",
            "pool",
            "gpu",
            "model_cache",
        ],
        select(
            bindparam("attempt"),
            claimed.c.id,
            claimed.c.attempts,
            bindparam("worker"),
            bindparam("node"),
            bindparam("worker_key"),
            bindparam("now"),
            literal(attempt_sql.RUNNING),
            bindparam("pool"),
            bindparam("gpu"),
            bindparam("model_cache"),
        ),
    )
    data = func.json_build_object(
        literal("status"), literal(JobStatus.running.value), literal("attempt"), claimed.c.attempts
    )
    running = insert_events(
        event_rows(
            claimed, claimed.c.id, claimed.c.owner_key_id, JobStatus.running.value, cast(data, Text)
        )
    )
    # The owner's turn: `owner_service.record_served`'s first statement, for the job claimed.
    turn = (
        served_sql.PG_MOVE.where(
            bindparam("owner_turn", type_=Boolean),
            owner_service.c.owner_key_id == select(claimed.c.owner_key_id).scalar_subquery(),
        )
        .returning(owner_service.c.owner_key_id)
        .cte("turn")
    )
    recorded = exists(select(turn.c.owner_key_id)).label("turn_recorded")
    # Whether the owner has a row (as committed when the statement began): when the turn was
    # not moved, it was held by another claim or already later (see `Taken`).
    known = exists(
        select(owner_service.c.owner_key_id).where(
            owner_service.c.owner_key_id == claimed.c.owner_key_id
        )
    ).label("owner_known")
    selected = select(*claimed.c, recorded, known)
    return selected.add_cte(attempt.cte("attempt"), running.cte("running"))


_TAKE = _build_take()
