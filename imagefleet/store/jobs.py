"""Job SQL. Each function is one named query or state change, run on the caller's transaction;
the transitions in `orchestrator/` decide when to call them.

Concurrency rule (see docs/architecture.md, "Transitions and locking"): every transition that
changes a job either locks the job row first with `lock_job` (`SELECT ... FOR UPDATE`) and then
touches its attempt and artifacts, in that order, or is a single conditional UPDATE whose row
count the caller checks. The conditional updates here keep their conditions even when the
caller holds the lock, so a mistake in a caller cannot make a stale attempt's write land.
SQLite has no row locks; its write transactions start with BEGIN IMMEDIATE and so run one at a
time, which gives the same guarantees.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from imagefleet.protocol import FailureCode, JobStatus
from imagefleet.store.database import WorkHint, notify_work
from imagefleet.store.ids import plausible_id
from imagefleet.store.job_statements import (
    BY_ATTEMPT,
    BY_ID,
    CLAIM,
    FAIL,
    INSERT_JOB,
    LOCK_BY_ATTEMPT,
    LOCK_BY_ID,
    RENEW,
    SUCCEED,
)
from imagefleet.store.tables import (
    api_keys,
    artifacts,
    attempts,
    job_events,
    job_inputs,
    job_models,
    jobs,
)

RUNNING = JobStatus.running.value
QUEUED = JobStatus.queued.value
ACTIVE = (QUEUED, RUNNING)


@dataclass(frozen=True)
class JobRow:
    id: str
    owner_key_id: str
    tier: str
    kind: str
    status: JobStatus
    priority: int
    params: dict[str, Any]
    model_id: int | None
    pixels: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress_step: int
    progress_total: int
    attempts: int
    max_attempts: int
    current_attempt_id: str | None
    lease_expires_at: float | None
    result_attempt_id: str | None
    error_code: str | None
    error_message: str | None
    stage_timings: dict[str, float]
    webhook_url: str | None = None
    webhook_events: str | None = None
    run_after: float | None = None
    min_vram_mb: int | None = None
    allow_same_node: bool = False
    same_node_after: float | None = None
    combo_key: str | None = None
    cost_units: float | None = None
    required_vram_mb: int | None = None
    placement: str | None = None
    warning: str | None = None
    warned_at: float | None = None


def insert_job(conn: Connection, **values: Any) -> JobRow:
    """Queues a new job; returns it as stored (RETURNING: no second read)."""
    params = insert_values(values)
    row = conn.execute(INSERT_JOB, params).mappings().one()
    notify_work(conn, work_hint(values))
    return to_job(row)


def insert_values(values: dict[str, Any]) -> dict[str, Any]:
    """A new job's row as `insert_job` writes it (params as JSON, counters at zero)."""
    return {
        "progress_step": 0,
        "progress_total": 0,
        "attempts": 0,
        **values,
        "params": json.dumps(values["params"]),
    }


def work_hint(values: dict[str, Any]) -> WorkHint:
    """What the NOTIFY for a new job tells waiting claims."""
    return WorkHint(values["kind"], values["pixels"], values.get("required_vram_mb"), values["id"])


def get_job(conn: Connection, job_id: str) -> JobRow | None:
    if not plausible_id(job_id):
        return None
    row = conn.execute(BY_ID, {"job": job_id}).mappings().first()
    return to_job(row) if row else None


def lock_job(conn: Connection, job_id: str) -> JobRow | None:
    """The job, with its row locked until the transaction ends (FOR UPDATE on PostgreSQL).

    The first thing every transition of an existing job does, so that all of them queue on the
    same lock in the same order (job, then attempt, then artifacts) and none can deadlock."""
    if not plausible_id(job_id):
        return None
    row = conn.execute(LOCK_BY_ID, {"job": job_id}).mappings().first()
    return to_job(row) if row else None


def attempt_job(
    conn: Connection, attempt_id: str, worker_key_id: str, *, lock: bool
) -> JobRow | None:
    """The job of this worker key's attempt in one statement, with `lock` locked as `lock_job`
    does: None when no such attempt is this key's (the attempt's own row is never locked: its
    job and key never change)."""
    if not plausible_id(attempt_id):
        return None
    query = LOCK_BY_ATTEMPT if lock else BY_ATTEMPT
    row = conn.execute(query, {"attempt": attempt_id, "key": worker_key_id}).mappings().first()
    return to_job(row) if row else None


def list_jobs(
    conn: Connection,
    owner_key_id: str | None,
    *,
    status: JobStatus | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[JobRow]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts;
    `owner_key_id` None lists every tenant's (an admin's view)."""
    query = select(jobs)
    if owner_key_id is not None:
        query = query.where(jobs.c.owner_key_id == owner_key_id)
    if status is not None:
        query = query.where(jobs.c.status == status.value)
    if before is not None:
        created_at, job_id = before
        query = query.where(
            or_(
                jobs.c.created_at < created_at,
                and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
            )
        )
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    return [to_job(row) for row in conn.execute(query).mappings()]


def owner_names(conn: Connection, owner_key_ids: Collection[str]) -> dict[str, str]:
    """The key name of each owner (what an admin's listing shows as the job's tenant)."""
    if not owner_key_ids:
        return {}
    rows = conn.execute(
        select(api_keys.c.id, api_keys.c.name).where(api_keys.c.id.in_(sorted(owner_key_ids)))
    ).all()
    return {row.id: row.name for row in rows}


def claim_job(
    conn: Connection,
    job_id: str,
    *,
    attempt_id: str,
    lease_expires_at: float,
    now: float,
    placement: str | None = None,
) -> JobRow | None:
    """queued -> running for one attempt, recording why it went to this worker. Returns the
    claimed job (its `attempts` is the new attempt's number), or None when another claimer took
    the job first (the conditional update matched no row). The caller inserts the attempt row."""
    params = {
        "job": job_id,
        "attempt": attempt_id,
        "lease": lease_expires_at,
        "now": now,
        "why": placement,
    }
    row = conn.execute(CLAIM, params).mappings().first()
    return to_job(row) if row else None


def renew_lease(
    conn: Connection,
    attempt_id: str,
    *,
    worker_key_id: str,
    step: int,
    total: int,
    lease_expires_at: float,
) -> bool:
    """Records progress and extends the lease, in one conditional UPDATE that also checks the
    attempt belongs to this worker key (the common heartbeat is then one statement); False
    when it does not, or no longer owns its job. Against the reaper this is safe either way
    round: the reaper locks the job and re-checks expiry, so it waits for this update or this
    update waits for it."""
    params = {
        "attempt": attempt_id,
        "key": worker_key_id,
        "step": step,
        "total": total,
        "lease": lease_expires_at,
    }
    return conn.execute(RENEW, params).rowcount == 1


def finish_job(
    conn: Connection,
    attempt_id: str,
    *,
    status: JobStatus,
    now: float,
    error_code: str | None = None,
    error_message: str | None = None,
    stage_timings: dict[str, float] | None = None,
) -> bool:
    """running -> a final status, for the attempt that owns the job; False for a stale attempt."""
    params: dict[str, Any] = {
        "attempt": attempt_id,
        "final": status.value,
        "now": now,
        "code": error_code,
        "message": error_message,
    }
    if status is JobStatus.succeeded:
        params["timings"] = json.dumps(stage_timings or {})
        return conn.execute(SUCCEED, params).rowcount == 1
    return conn.execute(FAIL, params).rowcount == 1


def requeue_job(
    conn: Connection,
    attempt_id: str,
    *,
    error_code: str,
    error_message: str,
    run_after: float | None = None,
    min_vram_mb: int | None = None,
    allow_same_node: bool | None = None,
    same_node_after: float | None = None,
    expired_before: float | None = None,
) -> bool:
    """running -> queued, releasing the attempt's lease; False for a stale attempt (or, with
    `expired_before`, for a lease that was renewed since). The job is not offered again before
    `run_after`, and (after running out of memory) preferably to workers with more than
    `min_vram_mb`."""
    values: dict[str, Any] = dict(
        status=QUEUED,
        current_attempt_id=None,
        lease_expires_at=None,
        started_at=None,
        progress_step=0,
        progress_total=0,
        error_code=error_code,
        error_message=error_message,
        run_after=run_after,
        same_node_after=same_node_after,
    )
    if min_vram_mb is not None:
        values["min_vram_mb"] = min_vram_mb
    if allow_same_node is not None:
        values["allow_same_node"] = allow_same_node
    conditions = [jobs.c.current_attempt_id == attempt_id, jobs.c.status == RUNNING]
    if expired_before is not None:
        conditions.append(jobs.c.lease_expires_at < expired_before)
    result = conn.execute(update(jobs).where(*conditions).values(**values))
    if result.rowcount == 1:
        notify_work(conn)
        return True
    return False


def cancel_job(conn: Connection, job_id: str, now: float) -> bool:
    """queued|running -> cancelled; False when the job was already final."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
        .values(
            status=JobStatus.cancelled.value,
            finished_at=now,
            current_attempt_id=None,
            lease_expires_at=None,
            error_code=FailureCode.cancelled.value,
            error_message="cancelled by the client",
        )
    )
    return result.rowcount == 1


def lock_expired(conn: Connection, now: float, limit: int) -> list[JobRow]:
    """Running jobs whose lease ran out, locked (SKIP LOCKED: a job whose row another
    transaction holds, e.g. a heartbeat renewing it, is left for the next pass). The expiry is
    evaluated by the locking statement itself, so a lease renewed a moment ago is never taken."""
    rows = conn.execute(
        select(jobs)
        .where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < now)
        .order_by(jobs.c.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).mappings()
    return [to_job(row) for row in rows]


def expired_jobs(conn: Connection, finished_before: float, limit: int) -> list[str]:
    """Final jobs that finished before the cutoff, oldest first (one retention batch)."""
    final = [status.value for status in JobStatus if status.is_final]
    query = (
        select(jobs.c.id)
        .where(jobs.c.status.in_(final), jobs.c.finished_at < finished_before)
        .order_by(jobs.c.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(conn.execute(query).scalars())


def delete_jobs(conn: Connection, job_ids: list[str]) -> int:
    """Removes jobs; their attempts, artifacts and deliveries go with them (ON DELETE CASCADE
    on PostgreSQL; explicitly here so SQLite without foreign keys agrees)."""
    if not job_ids:
        return 0
    conn.execute(artifacts.delete().where(artifacts.c.job_id.in_(job_ids)))
    conn.execute(attempts.delete().where(attempts.c.job_id.in_(job_ids)))
    conn.execute(job_models.delete().where(job_models.c.job_id.in_(job_ids)))
    conn.execute(job_inputs.delete().where(job_inputs.c.job_id.in_(job_ids)))
    conn.execute(job_events.delete().where(job_events.c.job_id.in_(job_ids)))
    return conn.execute(jobs.delete().where(jobs.c.id.in_(job_ids))).rowcount


def extend_leases(conn: Connection, until: float) -> int:
    """Pushes every running lease that ends before `until` out to `until`."""
    return conn.execute(
        update(jobs)
        .where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < until)
        .values(lease_expires_at=until)
    ).rowcount


def to_job(row: Any) -> JobRow:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    values["params"] = json.loads(values["params"])
    values["stage_timings"] = json.loads(values["stage_timings"] or "{}")
    return JobRow(**values)
