"""The lifecycle's hot writes, folded into one statement on PostgreSQL.

A worker call's writes (the job's UPDATE, its attempt row, its event) cost a round trip and
about 0.4 ms of Python each through SQLAlchemy and psycopg (docs/benchmarks.md, "Statements
folded"). On PostgreSQL each group here goes as one statement whose parts are data-modifying
CTEs. Those parts run on one snapshot and none sees another's writes, so each part is written
from values the caller already holds or from the RETURNING of the part it depends on: an
attempt row is inserted only from the row the claim's compare-and-set UPDATE returned, so the
compare-and-set still decides whether anything is written. SQLite has no data-modifying CTEs;
there the same writes go one by one, in process (no round trip), through the functions each
docstring names. tests/integration/test_statement_budget.py holds both stores to their counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import events as event_sql
from imagefleet.store import job_statements
from imagefleet.store import jobs as job_sql
from imagefleet.store.ids import plausible_id
from imagefleet.store.tables import artifacts, job_events, jobs

EVENT_COLUMNS = ("job_id", "owner_key_id", "event", "data", "created_at")


@dataclass(frozen=True)
class Beat:
    """A heartbeat's outcome: what it read of the attempt, and whether its lease was renewed
    (False: the attempt no longer holds its job)."""

    facts: attempt_sql.BeatFacts
    renewed: bool


def progress_moved(before: tuple[int, int], step: int, total: int) -> bool:
    """Whether a heartbeat's progress is news (lease-only beats repeat the last step)."""
    return total > 0 and (step, total) != before


def progress_data(step: int, total: int) -> dict[str, Any]:
    """A progress event's data."""
    fraction = round(min(1.0, step / total), 4) if total > 0 else 0.0
    return {"step": step, "total_steps": total, "fraction": fraction}


def beat(
    conn: Connection,
    attempt_id: str,
    worker_key_id: str,
    *,
    step: int,
    total: int,
    lease_expires_at: float,
    now: float,
) -> Beat | None:
    """A heartbeat: reads the attempt's BeatFacts, renews the lease with the conditional UPDATE
    (`jobs.renew_lease`) and records a progress event when the step moved, one statement on
    PostgreSQL; None when the attempt is not this worker key's (nothing written)."""
    if conn.dialect.name != "postgresql":
        facts = attempt_sql.beat_facts(conn, attempt_id, worker_key_id)
        if facts is None:
            return None
        renewed = job_sql.renew_lease(
            conn,
            attempt_id,
            worker_key_id=worker_key_id,
            step=step,
            total=total,
            lease_expires_at=lease_expires_at,
        )
        if renewed and progress_moved(facts.progress[:2], step, total):
            data = progress_data(step, total)
            record_event(conn, facts.job_id, facts.progress[2], "progress", data, now)
        return Beat(facts, renewed)
    if not plausible_id(attempt_id):
        return None
    params = {
        "attempt": attempt_id,
        "key": worker_key_id,
        "step": step,
        "total": total,
        "lease": lease_expires_at,
        "data": event_sql.dumps(progress_data(step, total)),
        "now": now,
    }
    row = conn.execute(_BEAT, params).first()
    if row is None:
        return None
    facts = attempt_sql.BeatFacts(row[0], row[1], (row[2], row[3], row[4]), row[5])
    if row.renewed and progress_moved(facts.progress[:2], step, total):
        event_sql.wake_after_commit(conn, facts.job_id, facts.progress[2])
    return Beat(facts, bool(row.renewed))


def succeed(
    conn: Connection,
    job: job_sql.JobRow,
    attempt_id: str,
    *,
    files: list[dict[str, Any]],
    stage_timings: dict[str, float],
    event: dict[str, Any] | None,
    now: float,
) -> bool:
    """running -> succeeded for the attempt that owns the job (`jobs.finish_job`), its attempt
    ended (`attempts.end_attempt`), the `files` sent with the completion recorded accepted
    (`artifacts.record_accepted`) and, with `event`, the job's final event: one statement on
    PostgreSQL. False for a stale attempt, with nothing written."""
    if conn.dialect.name != "postgresql":
        finished = job_sql.finish_job(
            conn, attempt_id, status=JobStatus.succeeded, now=now, stage_timings=stage_timings
        )
        if not finished:
            return False
        if files:
            artifact_sql.record_accepted(conn, files)
        attempt_sql.end_attempt(conn, attempt_id, outcome=AttemptOutcome.succeeded, now=now)
        if event is not None:
            record_event(conn, job.id, job.owner_key_id, JobStatus.succeeded.value, event, now)
        return True
    params: dict[str, Any] = {
        "attempt": attempt_id,
        "final": JobStatus.succeeded.value,
        "ended_as": AttemptOutcome.succeeded.value,
        "now": now,
        "code": None,
        "message": None,
        "timings": event_sql.dumps(stage_timings),
        "owner": job.owner_key_id,
        "event_data": event_sql.dumps(event) if event is not None else "",
        "with_event": event is not None,
    }
    for name in _FILE_COLUMNS:
        params[f"files_{name}"] = [file[name] for file in files]
    if conn.execute(_SUCCEED, params).scalar_one() != 1:
        return False
    if event is not None:
        event_sql.wake_after_commit(conn, job.id, job.owner_key_id)
    return True


def record_event(
    conn: Connection, job_id: str, owner_key_id: str, event: str, data: dict[str, Any], now: float
) -> None:
    """The SQLite path's event: `events.record`, positionally."""
    event_sql.record(
        conn, job_id=job_id, owner_key_id=owner_key_id, event=event, data=data, now=now
    )


def event_rows(source: Any, job_id: Any, owner_key_id: Any, event: str, data: Any) -> Any:
    """One `event` row per row of `source` (a part's RETURNING), as `events.record` writes it,
    at the bound `now`, for `insert_events`; the caller adds conditions with `where`."""
    return select(job_id, owner_key_id, literal(event), data, bindparam("now")).select_from(source)


def insert_events(rows: Any) -> Any:
    """`event_rows`' rows inserted into the event log."""
    return insert(job_events).from_select(EVENT_COLUMNS, rows)


def unnest(prefix: str, table: Table, columns: tuple[str, ...]) -> Any:
    """Rows bound as one array per column (`<prefix>_<column>`, typed as `table`'s columns),
    as a FROM item with those columns: several rows in one statement built once."""
    arrays = (bindparam(f"{prefix}_{name}", type_=ARRAY(table.c[name].type)) for name in columns)
    return func.unnest(*arrays).table_valued(*columns).render_derived().alias(prefix)


def _build_beat() -> Any:
    facts = attempt_sql.BEAT_FACTS.cte("facts")
    renewed = job_statements.RENEW.returning(jobs.c.id).cte("renewed")
    moved = and_(
        bindparam("total") > 0,
        or_(
            facts.c.progress_step != bindparam("step"),
            facts.c.progress_total != bindparam("total"),
        ),
    )
    source = renewed.join(facts, true())
    progress = insert_events(
        event_rows(source, renewed.c.id, facts.c.owner_key_id, "progress", bindparam("data")).where(
            moved
        )
    )
    return select(*facts.c, exists(select(renewed.c.id)).label("renewed")).add_cte(
        progress.cte("progress")
    )


# Built once (building costs several times what running does).
_BEAT = _build_beat()


# The columns of a file sent with the completion (`WorkerFiles._artifact_values` and its
# metadata), bound as one array each.
_FILE_COLUMNS = (
    "key",
    "job_id",
    "attempt_id",
    "idx",
    "content_type",
    "size_bytes",
    "sha256",
    "seed",
    "width",
    "height",
    "created_at",
)


def _build_succeed() -> Any:
    finished = job_statements.SUCCEED.returning(jobs.c.id).cte("finished")
    rows = unnest("files", artifacts, _FILE_COLUMNS)
    won = exists(select(finished.c.id))  # the compare-and-set: nothing else without it
    recorded = pg_insert(artifacts).from_select(
        [*_FILE_COLUMNS, "accepted"], select(*rows.c, true()).where(won)
    )
    recorded = recorded.on_conflict_do_update(
        index_elements=[artifacts.c.key],
        set_={name: recorded.excluded[name] for name in (*_FILE_COLUMNS, "accepted")[1:]},
    )
    final_event = insert_events(
        event_rows(
            finished,
            finished.c.id,
            bindparam("owner"),
            JobStatus.succeeded.value,
            bindparam("event_data"),
        ).where(bindparam("with_event", type_=Boolean))
    )
    count = select(func.count()).select_from(finished).scalar_subquery()
    return select(count).add_cte(
        attempt_sql.END.where(won).cte("ended"),
        recorded.cte("recorded"),
        final_event.cte("final_event"),
    )


_SUCCEED = _build_succeed()
