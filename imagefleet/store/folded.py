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

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, insert, literal, or_, select, true

from imagefleet.store import attempts as attempt_sql
from imagefleet.store import events as event_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import AFTER_COMMIT
from imagefleet.store.ids import plausible_id
from imagefleet.store.tables import job_events, jobs

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
    params = {
        "attempt": attempt_id,
        "key": worker_key_id,
        "step": step,
        "total": total,
        "lease": lease_expires_at,
    }
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
            event_sql.record(
                conn,
                job_id=facts.job_id,
                owner_key_id=facts.progress[2],
                event="progress",
                data=progress_data(step, total),
                now=now,
            )
        return Beat(facts, renewed)
    if not plausible_id(attempt_id):
        return None
    params |= {"data": _dumps(progress_data(step, total)), "now": now}
    row = conn.execute(_BEAT, params).first()
    if row is None:
        return None
    facts = attempt_sql.BeatFacts(row[0], row[1], (row[2], row[3], row[4]), row[5])
    if row.renewed and progress_moved(facts.progress[:2], step, total):
        _wake(conn, facts.job_id, facts.progress[2])
    return Beat(facts, bool(row.renewed))


def _wake(conn: Connection, job_id: str, owner_key_id: str) -> None:
    """What `events.record` leaves for the commit hooks: this process's streams wake."""
    conn.info.setdefault(AFTER_COMMIT, []).append((job_id, owner_key_id))


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _build_beat() -> Any:
    facts = attempt_sql.BEAT_FACTS.cte("facts")
    renewed = job_sql.RENEW.returning(jobs.c.id).cte("renewed")
    moved = and_(
        bindparam("total") > 0,
        or_(
            facts.c.progress_step != bindparam("step"),
            facts.c.progress_total != bindparam("total"),
        ),
    )
    progress = insert(job_events).from_select(
        EVENT_COLUMNS,
        select(
            renewed.c.id,
            facts.c.owner_key_id,
            literal("progress"),
            bindparam("data"),
            bindparam("now"),
        )
        .select_from(renewed)
        .join(facts, true())
        .where(moved),
    )
    return select(*facts.c, exists(select(renewed.c.id)).label("renewed")).add_cte(
        progress.cte("progress")
    )


# Built once (building costs several times what running does).
_BEAT = _build_beat()
