"""A queued job's place in the queue and the warning of a job no worker could run. Counts are
bounded index scans (they stop at a cap), so reading a job costs the same with a million queued.
"""

from __future__ import annotations

import functools

from sqlalchemy import (
    BindParameter,
    Connection,
    ScalarSelect,
    Select,
    Subquery,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)

from imagefleet.protocol import FailureCode, JobStatus
from imagefleet.store.jobs import JobRow
from imagefleet.store.tables import jobs

QUEUED = JobStatus.queued.value


def ahead(conn: Connection, row: JobRow, cap: int) -> tuple[int, int]:
    """Queued jobs ranked ahead of `row` by priority then age (all owners, and its owner's own),
    each counted up to `cap` (through ix_jobs_queue and ix_jobs_queued_owner)."""
    params = {"owner": row.owner_key_id, "priority": row.priority, "before": row.created_at}
    counted = conn.execute(_ahead_counts(cap), params).one()  # both in one statement
    return int(counted[0]), int(counted[1])


def admission(
    conn: Connection, owner_key_id: str, priority: int, now: float, cap: int, quota: int
) -> tuple[int, int, int]:
    """For a job about to be queued at `now`: the queued jobs that will be ahead of it (all
    owners', its owner's own), each up to `cap`, and its owner's queued jobs up to `quota` (the
    queued-jobs limit), in one statement of bounded index scans."""
    params = {"owner": owner_key_id, "priority": priority, "before": now}
    counted = conn.execute(_admission_counts(cap, quota), params).one()
    return int(counted[0]), int(counted[1]), int(counted[2])


# The counts are built once per cap and quota (settings), with bound parameters (see
# store/jobs.py): every submit runs one.
@functools.lru_cache(maxsize=16)
def _ahead_counts(cap: int) -> Select[int, int]:
    everyone, own = _ahead(cap)
    return select(_count(everyone), _count(own))


@functools.lru_cache(maxsize=16)
def _admission_counts(cap: int, quota: int) -> Select[int, int, int]:
    everyone, own = _ahead(cap)
    queued = (
        select(jobs.c.id)
        .where(jobs.c.owner_key_id == bindparam("owner"), jobs.c.status == QUEUED)
        .limit(quota)
        .subquery()
    )
    return select(_count(everyone), _count(own), _count(queued))


def _ahead(cap: int) -> tuple[Subquery, Subquery]:
    """Queued jobs ahead of a job of `owner` at `priority` created at `before`, all owners' and
    the owner's own, each up to `cap`."""
    priority: BindParameter[int] = bindparam("priority")
    before = or_(
        jobs.c.priority > priority,
        and_(jobs.c.priority == priority, jobs.c.created_at < bindparam("before")),
    )
    everyone = select(jobs.c.id).where(jobs.c.status == QUEUED, before).limit(cap).subquery()
    own = (
        select(jobs.c.id)
        .where(jobs.c.status == QUEUED, jobs.c.owner_key_id == bindparam("owner"), before)
        .limit(cap)
        .subquery()
    )
    return everyone, own


def _count(rows: Subquery) -> ScalarSelect[int]:
    return select(func.count()).select_from(rows).scalar_subquery()


def warn(conn: Connection, job_id: str, reason: str, now: float) -> None:
    """Flags a queued job that no worker seen recently could run."""
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
        .values(warning=reason, warned_at=now)
    )


def clear_warning(conn: Connection, job_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(warning=None, warned_at=None))


def lock_warned(conn: Connection, warned_before: float, limit: int) -> list[JobRow]:
    """Queued jobs flagged before the cutoff, locked (SKIP LOCKED: a claim holding one wins)."""
    from imagefleet.store.jobs import to_job

    rows = conn.execute(
        select(jobs)
        .where(jobs.c.status == QUEUED, jobs.c.warned_at < warned_before)
        .order_by(jobs.c.warned_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).mappings()
    return [to_job(row) for row in rows]


def fail_unservable(conn: Connection, job_id: str, reason: str, now: float) -> bool:
    """queued -> failed with the reason no worker could run it; False if it left the queue."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
        .values(
            status=JobStatus.failed.value,
            finished_at=now,
            error_code=FailureCode.no_eligible_worker.value,
            error_message=reason,
        )
    )
    return result.rowcount == 1
