"""The reads behind the dashboard's overview: queue counts, recently finished jobs, workers.

Each query is bounded by an index (`ix_jobs_queue` for queued and running jobs,
`ix_jobs_finished` for the window) and a row limit, so an overview costs the same on a table
of millions of jobs. `owner_key_id` None reads every tenant (an admin's view).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, or_, select

from imagefleet.dashboard.metrics import JobTimes
from imagefleet.protocol import JobStatus
from imagefleet.store.tables import (
    api_keys,
    artifacts,
    attempts,
    jobs,
    models,
    worker_state,
    workers,
)

WINDOW_ROWS_MAX = 50_000
# A worker may cache thousands of models: the dashboard names the first ones and counts the rest.
CACHED_SHOWN = 64
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


@dataclass(frozen=True)
class WorkerRow:
    id: str
    node_id: str
    capabilities: dict[str, object]
    last_seen_at: float
    resident_models: list[str]
    cached_count: int
    cached_first: list[str]
    running_jobs: int


@dataclass(frozen=True)
class RecentJobRow:
    id: str
    owner: str
    tier: str
    kind: str
    status: str
    created_at: float
    progress_step: int
    progress_total: int


def _owned(
    query: Select[tuple[object, ...]], owner_key_id: str | None
) -> Select[tuple[object, ...]]:
    return query if owner_key_id is None else query.where(jobs.c.owner_key_id == owner_key_id)


def queue_counts(conn: Connection, owner_key_id: str | None) -> list[tuple[str, str, int]]:
    """(tier, status, count) of queued and running jobs."""
    query = (
        select(jobs.c.tier, jobs.c.status, func.count())
        .where(jobs.c.status.in_(ACTIVE))
        .group_by(jobs.c.tier, jobs.c.status)
    )
    rows: list[Any] = list(conn.execute(_owned(query, owner_key_id)))
    return [(str(tier), str(status), int(count)) for tier, status, count in rows]


def window_jobs(conn: Connection, owner_key_id: str | None, since: float) -> list[JobTimes]:
    """Jobs that finished since `since` or are running now, with their accepted outputs."""
    images = (
        select(func.count())
        .select_from(artifacts)
        .where(artifacts.c.job_id == jobs.c.id, artifacts.c.accepted.is_(True))
        .scalar_subquery()
    )
    query = (
        select(
            jobs.c.created_at,
            jobs.c.started_at,
            jobs.c.finished_at,
            jobs.c.status,
            jobs.c.cost_units,
            images.label("images"),
        )
        .where(or_(jobs.c.finished_at >= since, jobs.c.status == JobStatus.running.value))
        .order_by(jobs.c.finished_at.desc())
        .limit(WINDOW_ROWS_MAX)
    )
    return [
        JobTimes(
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            status=JobStatus(r.status),
            cost_units=r.cost_units,
            images=int(r.images or 0),
        )
        for r in conn.execute(_owned(query, owner_key_id))
    ]


def recent_jobs(conn: Connection, limit: int) -> list[RecentJobRow]:
    """The newest jobs of every tenant, with their owner's key name."""
    query = (
        select(
            jobs.c.id,
            api_keys.c.name,
            jobs.c.tier,
            jobs.c.kind,
            jobs.c.status,
            jobs.c.created_at,
            jobs.c.progress_step,
            jobs.c.progress_total,
        )
        .join(api_keys, api_keys.c.id == jobs.c.owner_key_id)
        .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        .limit(limit)
    )
    return [RecentJobRow(*row) for row in conn.execute(query)]


def worker_rows(conn: Connection, seen_since: float) -> list[WorkerRow]:
    """Workers that claimed since `seen_since`, each with its count of running jobs."""
    running: dict[str, int] = dict(
        conn.execute(
            select(attempts.c.worker_id, func.count())
            .select_from(jobs)
            .join(attempts, attempts.c.id == jobs.c.current_attempt_id)
            .where(jobs.c.status == JobStatus.running.value)
            .group_by(attempts.c.worker_id)
        ).all()
    )
    # What each worker holds comes from `worker_state`, the record the scheduler reads too.
    rows = conn.execute(
        select(
            workers.c.id,
            workers.c.node_id,
            workers.c.capabilities,
            workers.c.last_seen_at,
            worker_state.c.resident_models,
            worker_state.c.cached_models,
        )
        .select_from(workers.outerjoin(worker_state, worker_state.c.worker_id == workers.c.id))
        .where(workers.c.last_seen_at >= seen_since)
        .order_by(workers.c.node_id, workers.c.id)
    ).mappings()
    found = []
    for r in rows:
        cached = json.loads(r["cached_models"] or "[]")
        found.append(
            WorkerRow(
                id=r["id"],
                node_id=r["node_id"],
                capabilities=json.loads(r["capabilities"]),
                last_seen_at=r["last_seen_at"],
                resident_models=json.loads(r["resident_models"] or "[]"),
                cached_count=len(cached),
                cached_first=cached[:CACHED_SHOWN],
                running_jobs=int(running.get(r["id"], 0)),
            )
        )
    return found


def model_names(conn: Connection, sha256s: set[str]) -> dict[str, str]:
    """`name@version` of the registered models with these hashes."""
    if not sha256s:
        return {}
    rows = conn.execute(
        select(models.c.sha256, models.c.name, models.c.version).where(
            models.c.sha256.in_(sorted(sha256s))
        )
    )
    return {sha: f"{name}@{version}" for sha, name, version in rows}
