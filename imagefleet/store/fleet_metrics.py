"""The aggregates `/metrics` exports, each one grouped query over the store."""

from __future__ import annotations

from sqlalchemy import Connection, case, func, select

from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.store.tables import (
    artifacts,
    attempts,
    jobs,
    models,
    webhook_deliveries,
)


def finished_jobs(conn: Connection) -> list[tuple[str, str, int]]:
    """(kind, status, count) of finished jobs still stored."""
    final = [JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value]
    return [
        (kind, status, int(n))
        for kind, status, n in conn.execute(
            select(jobs.c.kind, jobs.c.status, func.count())
            .where(jobs.c.status.in_(final))
            .group_by(jobs.c.kind, jobs.c.status)
        ).all()
    ]


def billed(conn: Connection) -> list[tuple[str | None, str | None, float]]:
    """(pool, gpu, lease seconds) summed over ended attempts, in the database."""
    lease = attempts.c.ended_at - attempts.c.started_at
    return [
        (pool, gpu, float(total or 0.0))
        for pool, gpu, total in conn.execute(
            select(attempts.c.pool, attempts.c.gpu, func.sum(lease))
            .where(attempts.c.ended_at.is_not(None))
            .group_by(attempts.c.pool, attempts.c.gpu)
        ).all()
    ]


def seconds_per_image(
    conn: Connection, bounds: tuple[float, ...]
) -> list[tuple[str | None, list[int], int, float]]:
    """Per GPU type: the images whose attempt's lease seconds per image fall under each bound
    (cumulative), the images, and their seconds: a histogram, counted in the database."""
    images = (
        select(artifacts.c.attempt_id, func.count().label("images"))
        .where(artifacts.c.accepted.is_(True))
        .group_by(artifacts.c.attempt_id)
        .subquery()
    )
    lease = attempts.c.ended_at - attempts.c.started_at
    per_image = lease / images.c.images
    columns = [func.sum(case((per_image <= bound, images.c.images), else_=0)) for bound in bounds]
    rows = conn.execute(
        select(attempts.c.gpu, *columns, func.sum(images.c.images), func.sum(lease))
        .select_from(attempts.join(images, images.c.attempt_id == attempts.c.id))
        .where(attempts.c.ended_at.is_not(None))
        .group_by(attempts.c.gpu)
    ).all()
    return [
        (row[0], [int(v or 0) for v in row[1 : 1 + len(bounds)]], int(row[-2]), float(row[-1]))
        for row in rows
    ]


def model_usage(conn: Connection) -> list[tuple[str, str | None, str | None, int]]:
    """(model name, pool, cache result, attempts) for attempts of jobs with a checkpoint."""
    rows = conn.execute(
        select(models.c.name, attempts.c.pool, attempts.c.model_cache, func.count())
        .select_from(
            attempts.join(jobs, jobs.c.id == attempts.c.job_id).join(
                models, models.c.id == jobs.c.model_id
            )
        )
        .group_by(models.c.name, attempts.c.pool, attempts.c.model_cache)
    ).all()
    return [(name, pool, cache, int(n)) for name, pool, cache, n in rows]


def webhook_backlog(conn: Connection) -> int:
    """Deliveries neither delivered nor given up on."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(webhook_deliveries)
            .where(
                webhook_deliveries.c.delivered_at.is_(None),
                webhook_deliveries.c.gave_up_at.is_(None),
            )
        ).scalar_one()
    )


def running_attempts(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.outcome == AttemptOutcome.running.value)
        ).scalar_one()
    )
