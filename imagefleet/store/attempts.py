"""Attempt SQL: one worker's try at a job. Rows are written only by a transition that holds the
job's row lock (or, on SQLite, the database's write lock), so these functions never race."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, insert, select, update

from imagefleet.protocol import AttemptOutcome
from imagefleet.store.ids import plausible_id
from imagefleet.store.tables import attempts, jobs, workers
from imagefleet.store.workers import DRAIN_DEFAULT

# Outcomes that count against a job's max attempts and mark its node as one where it failed.
COUNTED_OUTCOMES = (AttemptOutcome.failed.value, AttemptOutcome.lease_expired.value)
RUNNING = AttemptOutcome.running.value

# Built once with bound parameters (see store/jobs.py).
_DRAINING = (
    select(func.coalesce(workers.c.drain_reason, DRAIN_DEFAULT))
    .where(workers.c.node_id == attempts.c.node_id, workers.c.drain_requested_at.is_not(None))
    .limit(1)
    .scalar_subquery()
)
BEAT_FACTS = (
    select(
        attempts.c.job_id,
        attempts.c.node_id,
        jobs.c.progress_step,
        jobs.c.progress_total,
        jobs.c.owner_key_id,
        _DRAINING,
    )
    .join(jobs, jobs.c.id == attempts.c.job_id)
    .where(attempts.c.id == bindparam("attempt"), attempts.c.worker_key_id == bindparam("key"))
)
_INSERT = insert(attempts)
_FAILED_NODES = select(attempts.c.job_id, attempts.c.node_id).where(
    attempts.c.job_id.in_(bindparam("jobs", expanding=True)),
    attempts.c.outcome.in_(COUNTED_OUTCOMES),
)
END = (
    update(attempts)
    .where(attempts.c.id == bindparam("attempt"), attempts.c.outcome == RUNNING)
    .values(
        outcome=bindparam("ended_as"),
        ended_at=bindparam("now"),
        error_code=bindparam("code"),
        error_message=bindparam("message"),
    )
)


@dataclass(frozen=True)
class AttemptRow:
    id: str
    job_id: str
    seq: int
    worker_id: str
    node_id: str
    worker_key_id: str | None
    outcome: AttemptOutcome
    started_at: float
    ended_at: float | None
    error_code: str | None
    error_message: str | None
    pool: str | None = None
    gpu: str | None = None
    model_cache: str | None = None


@dataclass(frozen=True)
class BeatFacts:
    """What a heartbeat needs besides its own UPDATE, read in one statement: the job, the
    progress it last reported (a beat that repeats it records no event), its owner (whose
    event stream hears of progress) and why the node is being drained, if it is."""

    job_id: str
    node_id: str
    progress: tuple[int, int, str]
    drain_reason: str | None


def beat_facts(conn: Connection, attempt_id: str, worker_key_id: str) -> BeatFacts | None:
    """The attempt's BeatFacts if this worker key claimed it; None otherwise. Unlocked: the
    heartbeat's conditional UPDATE is what decides, and an attempt's job never changes."""
    if not plausible_id(attempt_id):
        return None
    row = conn.execute(BEAT_FACTS, {"attempt": attempt_id, "key": worker_key_id}).first()
    if row is None:
        return None
    return BeatFacts(row[0], row[1], (row[2], row[3], row[4]), row[5])


def insert_attempt(
    conn: Connection,
    *,
    attempt_id: str,
    job_id: str,
    seq: int,
    worker_id: str,
    node_id: str,
    worker_key_id: str,
    now: float,
    pool: str | None = None,
    gpu: str | None = None,
    model_cache: str | None = None,
) -> None:
    conn.execute(
        _INSERT,
        {
            "id": attempt_id,
            "job_id": job_id,
            "seq": seq,
            "worker_id": worker_id,
            "node_id": node_id,
            "worker_key_id": worker_key_id,
            "pool": pool,
            "gpu": gpu,
            "model_cache": model_cache,
            "started_at": now,
            "outcome": RUNNING,
        },
    )


def get_attempt(conn: Connection, attempt_id: str) -> AttemptRow | None:
    if not plausible_id(attempt_id):
        return None
    row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).mappings().first()
    return _to_attempt(row) if row else None


def job_attempts(conn: Connection, job_id: str) -> list[AttemptRow]:
    """A job's attempt history, first attempt first."""
    rows = conn.execute(
        select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.seq)
    ).mappings()
    return [_to_attempt(row) for row in rows]


def end_attempt(
    conn: Connection,
    attempt_id: str,
    *,
    outcome: AttemptOutcome,
    now: float,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """running -> `outcome`; False when the attempt had already ended."""
    params = {
        "attempt": attempt_id,
        "ended_as": outcome.value,
        "now": now,
        "code": error_code,
        "message": error_message,
    }
    return conn.execute(END, params).rowcount == 1


def count_failures(conn: Connection, job_id: str) -> int:
    """Attempts that count against max_attempts (a worker handing a job back does not)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.job_id == job_id, attempts.c.outcome.in_(COUNTED_OUTCOMES))
        ).scalar_one()
    )


def failed_nodes(conn: Connection, job_ids: list[str]) -> dict[str, frozenset[str]]:
    """For each job, the nodes on which one of its attempts failed or lost its lease."""
    found: dict[str, set[str]] = {}
    if job_ids:
        rows = conn.execute(_FAILED_NODES, {"jobs": list(job_ids)}).all()
        for job_id, node_id in rows:
            found.setdefault(job_id, set()).add(node_id)
    return {job_id: frozenset(nodes) for job_id, nodes in found.items()}


def _to_attempt(row: object) -> AttemptRow:
    values = dict(row)  # type: ignore[call-overload]
    values["outcome"] = AttemptOutcome(values["outcome"])
    return AttemptRow(**values)
