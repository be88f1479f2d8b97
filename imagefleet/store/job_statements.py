"""The job lifecycle's statements, built once with bound parameters: building a statement
costs several times what running it does (docs/benchmarks.md, "Statements built once"). Bound
names differ from column names, which SQLAlchemy reserves for the SET clause. `store.jobs` runs
them; `store.folded*` compose them into PostgreSQL's one-statement forms."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select, update

from imagefleet.protocol import JobStatus
from imagefleet.store.tables import attempts, jobs

RUNNING = JobStatus.running.value
QUEUED = JobStatus.queued.value

INSERT_JOB = insert(jobs).returning(*jobs.c)
BY_ID = select(jobs).where(jobs.c.id == bindparam("job"))
LOCK_BY_ID = BY_ID.with_for_update()
OWNED_JOB_ID = (
    select(attempts.c.job_id)
    .where(attempts.c.id == bindparam("attempt"), attempts.c.worker_key_id == bindparam("key"))
    .scalar_subquery()
)
BY_ATTEMPT = select(jobs).where(jobs.c.id == OWNED_JOB_ID)
LOCK_BY_ATTEMPT = BY_ATTEMPT.with_for_update()
CLAIM = (
    update(jobs)
    .where(jobs.c.id == bindparam("job"), jobs.c.status == QUEUED)
    .values(
        status=RUNNING,
        current_attempt_id=bindparam("attempt"),
        lease_expires_at=bindparam("lease"),
        attempts=jobs.c.attempts + 1,
        started_at=bindparam("now"),
        progress_step=0,
        progress_total=0,
        placement=bindparam("why"),
    )
    .returning(*jobs.c)
)
RENEW = (
    update(jobs)
    .where(
        jobs.c.current_attempt_id == bindparam("attempt"),
        jobs.c.status == RUNNING,
        select(attempts.c.id)
        .where(attempts.c.id == bindparam("attempt"), attempts.c.worker_key_id == bindparam("key"))
        .exists(),
    )
    .values(
        progress_step=bindparam("step"),
        progress_total=bindparam("total"),
        lease_expires_at=bindparam("lease"),
    )
)
_FINAL_VALUES: dict[str, Any] = dict(
    status=bindparam("final"),
    finished_at=bindparam("now"),
    current_attempt_id=None,
    lease_expires_at=None,
    error_code=bindparam("code"),
    error_message=bindparam("message"),
)
FINISH_WHERE = (jobs.c.current_attempt_id == bindparam("attempt"), jobs.c.status == RUNNING)
FAIL = update(jobs).where(*FINISH_WHERE).values(**_FINAL_VALUES)
SUCCEED = (
    update(jobs)
    .where(*FINISH_WHERE)
    .values(
        **_FINAL_VALUES,
        result_attempt_id=bindparam("attempt"),
        progress_step=jobs.c.progress_total,
        stage_timings=bindparam("timings"),
    )
)
