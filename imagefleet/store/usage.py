"""The rows cost accounting reads: attempts with their job's owner, kind and accepted images,
and workers' up-time spans. The arithmetic is `scaling/pricing.py`'s (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, Subquery, and_, func, or_, select

from imagefleet.scaling.pricing import AttemptRecord, WorkerSpan
from imagefleet.store.tables import artifacts, attempts, jobs, workers
from imagefleet.worker_protocol import WorkerCapabilities


@dataclass(frozen=True)
class OwnedAttempt:
    record: AttemptRecord
    owner_key_id: str
    kind: str
    job_finished_at: float | None


def _images() -> Subquery:
    return (
        select(artifacts.c.attempt_id, func.count().label("images"))
        .where(artifacts.c.accepted.is_(True))
        .group_by(artifacts.c.attempt_id)
        .subquery()
    )


def attempts_of_jobs(conn: Connection, job_ids: list[str]) -> list[OwnedAttempt]:
    if not job_ids:
        return []
    return _query(conn, attempts.c.job_id.in_(job_ids))


def attempts_of_owner(
    conn: Connection, owner_key_id: str, start: float, end: float
) -> list[OwnedAttempt]:
    """Every attempt of the owner's jobs that finished within [start, end)."""
    return _query(
        conn,
        and_(
            jobs.c.owner_key_id == owner_key_id,
            jobs.c.finished_at >= start,
            jobs.c.finished_at < end,
        ),
    )


def attempts_of_finished(
    conn: Connection, start: float, end: float, owner_key_id: str | None = None
) -> list[OwnedAttempt]:
    """Every attempt of the jobs (of one owner, or all) that finished within [start, end):
    what the dashboard's overview bills against the images those jobs delivered."""
    where = and_(jobs.c.finished_at >= start, jobs.c.finished_at < end)
    if owner_key_id is not None:
        where = and_(where, jobs.c.owner_key_id == owner_key_id)
    return _query(conn, where)


def attempts_in_window(conn: Connection, start: float, end: float) -> list[OwnedAttempt]:
    """Attempts whose lease overlaps [start, end)."""
    return _query(
        conn,
        and_(
            attempts.c.started_at < end,
            or_(attempts.c.ended_at.is_(None), attempts.c.ended_at >= start),
        ),
    )


def _query(conn: Connection, where: ColumnElement[bool]) -> list[OwnedAttempt]:
    images = _images()
    rows = conn.execute(
        select(
            attempts,
            jobs.c.owner_key_id,
            jobs.c.kind,
            jobs.c.cost_units,
            jobs.c.finished_at.label("job_finished_at"),
            func.coalesce(images.c.images, 0).label("images"),
        )
        .select_from(
            attempts.join(jobs, jobs.c.id == attempts.c.job_id).outerjoin(
                images,
                images.c.attempt_id == attempts.c.id,
            )
        )
        .where(where)
    )
    return [
        OwnedAttempt(
            record=AttemptRecord(
                job_id=row.job_id,
                attempt_id=row.id,
                worker_id=row.worker_id,
                pool=row.pool,
                gpu=row.gpu,
                claimed_at=row.started_at,
                ended_at=row.ended_at,
                outcome=row.outcome,
                images=int(row.images),
                cost_units=row.cost_units or 0.0,
            ),
            owner_key_id=row.owner_key_id,
            kind=row.kind,
            job_finished_at=row.job_finished_at,
        )
        for row in rows
    ]


def worker_spans(conn: Connection, start: float, end: float) -> list[WorkerSpan]:
    """Workers up (first seen to last seen) at some point of [start, end)."""
    rows = conn.execute(
        select(workers).where(workers.c.first_seen_at < end, workers.c.last_seen_at >= start)
    )
    spans = []
    for row in rows:
        gpu = WorkerCapabilities.model_validate_json(row.capabilities).gpu_name
        spans.append(WorkerSpan(row.id, row.pool, gpu, row.first_seen_at, row.last_seen_at))
    return spans
