"""Job and attempt SQL. Each function is one named state change or query, run on the caller's
transaction; `orchestrator/lifecycle.py` decides when to call them.

Every change to a running job is conditional on the job still belonging to the calling attempt
(`current_attempt_id`), which is what makes stale attempts harmless: their updates match no row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from imagefleet.protocol import JobStatus
from imagefleet.store.database import notify_work
from imagefleet.store.tables import artifacts, attempts, idempotency_keys, jobs, models

RUNNING = JobStatus.running.value
QUEUED = JobStatus.queued.value


@dataclass(frozen=True)
class JobRow:
    id: str
    owner_key_id: str
    tier: str
    kind: str
    status: JobStatus
    priority: int
    params: dict[str, Any]
    model_id: int
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


@dataclass(frozen=True)
class QueuedJob:
    """What the scheduling policy needs to know of a queued job."""

    id: str
    kind: str
    priority: int
    pixels: int
    created_at: float
    model_sha256: str
    failed_nodes: frozenset[str]
    min_vram_mb: int | None = None
    allow_same_node: bool = False


@dataclass(frozen=True)
class AttemptRow:
    id: str
    job_id: str
    seq: int
    worker_id: str
    node_id: str
    worker_key_id: str | None
    outcome: str
    started_at: float
    ended_at: float | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class ArtifactRow:
    key: str
    job_id: str
    attempt_id: str
    idx: int
    content_type: str
    size_bytes: int
    sha256: str
    seed: int | None
    width: int | None
    height: int | None


def insert_job(conn: Connection, **values: Any) -> None:
    values["params"] = json.dumps(values["params"])
    conn.execute(insert(jobs).values(progress_step=0, progress_total=0, attempts=0, **values))
    notify_work(conn)


def plausible_id(value: str) -> bool:
    """Ids are short ASCII tokens; anything else (NUL bytes, 10 kB of text) cannot exist and is
    answered as unknown without reaching the database."""
    return 0 < len(value) <= 64 and value.isascii() and value.isalnum()


def get_job(conn: Connection, job_id: str) -> JobRow | None:
    if not plausible_id(job_id):
        return None
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return _to_job(row) if row else None


def list_jobs(
    conn: Connection,
    owner_key_id: str,
    *,
    status: JobStatus | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[JobRow]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    query = select(jobs).where(jobs.c.owner_key_id == owner_key_id)
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
    return [_to_job(row) for row in conn.execute(query).mappings()]


def queued_candidates(
    conn: Connection, kinds: list[str], limit: int, now: float
) -> list[QueuedJob]:
    """The head of the queue (highest priority, then oldest) with each job's failure history;
    jobs backing off after a failure (`run_after` in the future) wait their turn.

    On PostgreSQL the rows are locked with SKIP LOCKED, so concurrent claimers look at disjoint
    heads instead of all fighting over the oldest job; SQLite serializes writers anyway."""
    rows = conn.execute(
        select(
            jobs.c.id,
            jobs.c.kind,
            jobs.c.priority,
            jobs.c.pixels,
            jobs.c.created_at,
            jobs.c.min_vram_mb,
            jobs.c.allow_same_node,
            jobs.c.attempts,
            models.c.sha256,
        )
        .join(models, models.c.id == jobs.c.model_id)
        .where(
            jobs.c.status == QUEUED,
            jobs.c.kind.in_(kinds),
            or_(jobs.c.run_after.is_(None), jobs.c.run_after <= now),
        )
        .order_by(jobs.c.priority.desc(), jobs.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=jobs)
    ).all()
    failed: dict[str, set[str]] = {}
    # Only jobs tried before can have failed somewhere: most of a healthy queue has not.
    job_ids = [row.id for row in rows if row.attempts]
    if job_ids:
        for job_id, node_id in conn.execute(
            select(attempts.c.job_id, attempts.c.node_id).where(
                attempts.c.job_id.in_(job_ids), attempts.c.outcome.in_(("failed", "lease_expired"))
            )
        ).all():
            failed.setdefault(job_id, set()).add(node_id)
    return [
        QueuedJob(
            r.id,
            r.kind,
            r.priority,
            r.pixels,
            r.created_at,
            r.sha256,
            frozenset(failed.get(r.id, ())),
            r.min_vram_mb,
            bool(r.allow_same_node),
        )
        for r in rows
    ]


def claim_job(
    conn: Connection,
    job_id: str,
    *,
    attempt_id: str,
    worker_id: str,
    node_id: str,
    worker_key_id: str,
    lease_expires_at: float,
    now: float,
) -> JobRow | None:
    """queued -> running for one attempt. Returns the claimed job (its `attempts` is the new
    attempt's number), or None when another claimer took the job first (the conditional update
    matched no row)."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == QUEUED)
        .values(
            status=RUNNING,
            current_attempt_id=attempt_id,
            lease_expires_at=lease_expires_at,
            attempts=jobs.c.attempts + 1,
            started_at=now,
            progress_step=0,
            progress_total=0,
        )
        .returning(*jobs.c)
    )
    row = result.mappings().first()
    if row is None:
        return None
    claimed = _to_job(row)
    seq = claimed.attempts
    conn.execute(
        insert(attempts).values(
            id=attempt_id,
            job_id=job_id,
            seq=seq,
            worker_id=worker_id,
            node_id=node_id,
            worker_key_id=worker_key_id,
            started_at=now,
            outcome="running",
        )
    )
    return claimed


def get_attempt(conn: Connection, attempt_id: str) -> AttemptRow | None:
    if not plausible_id(attempt_id):
        return None
    row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).mappings().first()
    return AttemptRow(**row) if row else None


def job_attempts(conn: Connection, job_id: str) -> list[AttemptRow]:
    """A job's attempt history, first attempt first."""
    rows = conn.execute(
        select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.seq)
    ).mappings()
    return [AttemptRow(**row) for row in rows]


def renew_lease(
    conn: Connection, attempt_id: str, *, step: int, total: int, lease_expires_at: float
) -> bool:
    """Records progress and extends the lease; False when the attempt no longer owns its job."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.current_attempt_id == attempt_id, jobs.c.status == RUNNING)
        .values(progress_step=step, progress_total=total, lease_expires_at=lease_expires_at)
    )
    return result.rowcount == 1


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
    values: dict[str, Any] = dict(
        status=status.value,
        finished_at=now,
        current_attempt_id=None,
        lease_expires_at=None,
        error_code=error_code,
        error_message=error_message,
    )
    if status is JobStatus.succeeded:
        values["result_attempt_id"] = attempt_id
        values["progress_step"] = jobs.c.progress_total
        values["stage_timings"] = json.dumps(stage_timings or {})
    result = conn.execute(
        update(jobs)
        .where(jobs.c.current_attempt_id == attempt_id, jobs.c.status == RUNNING)
        .values(**values)
    )
    return result.rowcount == 1


def requeue_job(
    conn: Connection,
    attempt_id: str,
    *,
    error_code: str,
    error_message: str,
    run_after: float | None = None,
    min_vram_mb: int | None = None,
) -> bool:
    """running -> queued, releasing the attempt's lease; False for a stale attempt. The job is
    not offered again before `run_after`, and (after running out of memory) preferably to
    workers with more than `min_vram_mb`."""
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
    )
    if min_vram_mb is not None:
        values["min_vram_mb"] = min_vram_mb
    result = conn.execute(
        update(jobs)
        .where(jobs.c.current_attempt_id == attempt_id, jobs.c.status == RUNNING)
        .values(**values)
    )
    if result.rowcount == 1:
        notify_work(conn)
        return True
    return False


def end_attempt(
    conn: Connection,
    attempt_id: str,
    *,
    outcome: str,
    now: float,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    conn.execute(
        update(attempts)
        .where(attempts.c.id == attempt_id, attempts.c.outcome == "running")
        .values(outcome=outcome, ended_at=now, error_code=error_code, error_message=error_message)
    )


def cancel_job(conn: Connection, job_id: str, now: float) -> str | None:
    """queued|running -> cancelled. Returns the attempt that was running it (it must stop), or
    None; raises nothing for an already final job (the caller reads the status)."""
    row = conn.execute(
        select(jobs.c.status, jobs.c.current_attempt_id).where(jobs.c.id == job_id)
    ).first()
    if row is None or row.status not in (QUEUED, RUNNING):
        return None
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_((QUEUED, RUNNING)))
        .values(
            status=JobStatus.cancelled.value,
            finished_at=now,
            current_attempt_id=None,
            lease_expires_at=None,
            error_code="cancelled",
            error_message="cancelled by the client",
        )
    )
    return row.current_attempt_id


def expired_attempts(conn: Connection, now: float, limit: int) -> list[str]:
    """Attempts of running jobs whose lease ran out."""
    rows = conn.execute(
        select(jobs.c.current_attempt_id)
        .where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < now)
        .limit(limit)
    ).scalars()
    return [attempt_id for attempt_id in rows if attempt_id]


def record_artifact(conn: Connection, **values: Any) -> None:
    """Records an uploaded file; a re-upload of the same index by the same attempt replaces it."""
    conn.execute(artifacts.delete().where(artifacts.c.key == values["key"]))
    conn.execute(insert(artifacts).values(accepted=False, **values))


def attempt_artifacts(conn: Connection, attempt_id: str) -> list[ArtifactRow]:
    rows = conn.execute(
        select(artifacts).where(artifacts.c.attempt_id == attempt_id).order_by(artifacts.c.idx)
    ).mappings()
    return [_to_artifact(row) for row in rows]


def accept_artifacts(conn: Connection, attempt_id: str, outputs: dict[int, dict[str, int]]) -> None:
    """Marks the winning attempt's files as the job's outputs, with their seeds and sizes."""
    for idx, meta in outputs.items():
        conn.execute(
            update(artifacts)
            .where(artifacts.c.attempt_id == attempt_id, artifacts.c.idx == idx)
            .values(accepted=True, **meta)
        )


def job_outputs(conn: Connection, job_ids: list[str]) -> dict[str, list[ArtifactRow]]:
    """Accepted outputs of several jobs at once (one query for a whole page of jobs)."""
    found: dict[str, list[ArtifactRow]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = conn.execute(
        select(artifacts)
        .where(artifacts.c.job_id.in_(job_ids), artifacts.c.accepted.is_(True))
        .order_by(artifacts.c.job_id, artifacts.c.idx)
    ).mappings()
    for row in rows:
        found[row["job_id"]].append(_to_artifact(row))
    return found


def _to_artifact(row: Any) -> ArtifactRow:
    return ArtifactRow(
        row["key"],
        row["job_id"],
        row["attempt_id"],
        row["idx"],
        row["content_type"],
        row["size_bytes"],
        row["sha256"],
        row["seed"],
        row["width"],
        row["height"],
    )


def _to_job(row: Any) -> JobRow:
    values = dict(row)
    values["status"] = JobStatus(values["status"])
    values["params"] = json.loads(values["params"])
    values["stage_timings"] = json.loads(values["stage_timings"] or "{}")
    return JobRow(**values)


def count_failures(conn: Connection, job_id: str) -> int:
    """Attempts that count against max_attempts (a worker handing a job back does not)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.job_id == job_id, attempts.c.outcome.in_(("failed", "lease_expired")))
        ).scalar_one()
    )


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


def artifact_keys(conn: Connection, job_ids: list[str]) -> list[str]:
    """Every file stored for these jobs, from any attempt, accepted or not."""
    if not job_ids:
        return []
    return list(
        conn.execute(select(artifacts.c.key).where(artifacts.c.job_id.in_(job_ids))).scalars()
    )


def delete_jobs(conn: Connection, job_ids: list[str]) -> int:
    """Removes jobs with their attempts and artifact records."""
    if not job_ids:
        return 0
    conn.execute(artifacts.delete().where(artifacts.c.job_id.in_(job_ids)))
    conn.execute(attempts.delete().where(attempts.c.job_id.in_(job_ids)))
    return conn.execute(jobs.delete().where(jobs.c.id.in_(job_ids))).rowcount


def count_queued(conn: Connection, owner_key_id: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.owner_key_id == owner_key_id, jobs.c.status == QUEUED)
        ).scalar_one()
    )


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


def extend_leases(conn: Connection, until: float) -> int:
    """Pushes every running lease that ends before `until` out to `until`."""
    return conn.execute(
        update(jobs)
        .where(jobs.c.status == RUNNING, jobs.c.lease_expires_at < until)
        .values(lease_expires_at=until)
    ).rowcount
