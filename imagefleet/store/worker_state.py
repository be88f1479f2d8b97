"""Each worker's state as reported with its last claim (GPU, what is resident and cached, free
disk, download speed), and the busy workers' current jobs: what the queue's explanations and the
policy's warm-worker wait read. Rows are bounded by the fleet, never by the queue."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.store.tables import attempts, jobs, worker_state
from imagefleet.worker_protocol import ClaimRequest


@dataclass(frozen=True)
class WorkerState:
    worker_id: str
    node_id: str
    gpu_name: str
    vram_mb: int
    max_pixels: int
    kinds: frozenset[str]
    resident_combos: frozenset[str]
    resident_models: frozenset[str]
    cached_models: frozenset[str]
    free_disk_bytes: int | None
    download_bytes_per_s: float | None
    updated_at: float


@dataclass(frozen=True)
class BusyWorker:
    """A worker running a job now: since when, and the job's estimated cost."""

    worker_id: str
    started_at: float
    cost_units: float | None


# The columns a claim reports; a row is rewritten only when one of them changed, or when its
# `updated_at` is older than the caller's `fresh_for` (readers look for recently seen workers).
REPORTED = (
    "node_id",
    "gpu_name",
    "vram_mb",
    "max_pixels",
    "kinds",
    "resident_combos",
    "resident_models",
    "cached_models",
    "free_disk_bytes",
    "download_bytes_per_s",
)


def record(conn: Connection, request: ClaimRequest, now: float, fresh_for: float = 0.0) -> None:
    """Upserts the worker's reported state: one statement, and no row write when nothing
    changed and the row is younger than `fresh_for` seconds (the same report from another
    replica, or a repeated claim). This table is the one record of what a worker holds: the
    scheduler's warm-worker wait, the queue's explanations and the dashboard all read it."""
    capabilities = request.capabilities
    params = {
        "worker_id": request.worker_id,
        "node_id": request.node_id,
        "gpu_name": capabilities.gpu_name,
        "vram_mb": capabilities.vram_mb,
        "max_pixels": capabilities.max_pixels,
        "kinds": json.dumps(sorted(capabilities.kinds)),
        "resident_combos": json.dumps(request.resident_combos),
        "resident_models": json.dumps(request.resident_models),
        "cached_models": json.dumps(request.cached_models),
        "free_disk_bytes": request.free_disk_bytes,
        "download_bytes_per_s": request.download_bytes_per_s,
        "updated_at": now,
        "stale_before": now - fresh_for,
    }
    conn.execute(_upsert(conn.dialect.name), params)


@functools.cache
def _upsert(dialect: str) -> Insert:
    """`record`'s statement for this dialect, built once (see store/jobs.py): every claim whose
    worker's sighting is due runs it."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(worker_state)
    new, old = statement.excluded, worker_state.c
    changed = or_(
        *(old[name].is_distinct_from(new[name]) for name in REPORTED),
        old.updated_at < bindparam("stale_before"),
    )
    written = {name: new[name] for name in (*REPORTED, "updated_at")}
    return statement.on_conflict_do_update(
        index_elements=[old.worker_id], set_=written, where=changed
    )


def seen_since(conn: Connection, since: float) -> list[WorkerState]:
    """Workers that reported since `since` (an index range on updated_at)."""
    rows = conn.execute(select(worker_state).where(worker_state.c.updated_at >= since)).all()
    return [_state(r) for r in rows]


_BUSY = (
    select(attempts.c.worker_id)
    .join(jobs, attempts.c.id == jobs.c.current_attempt_id)
    .where(jobs.c.status == JobStatus.running.value)
    .distinct()
    .subquery()
)
# Built once with bound parameters (see store/jobs.py): every submit reads it.
_SEEN_AND_BUSY = (
    select(worker_state, _BUSY.c.worker_id.is_not(None).label("busy"))
    .outerjoin(_BUSY, _BUSY.c.worker_id == worker_state.c.worker_id)
    .where(worker_state.c.updated_at >= bindparam("since"))
)


def seen_and_busy(conn: Connection, since: float) -> list[tuple[WorkerState, bool]]:
    """`seen_since`, each worker with whether it has a running job, in one statement (the
    running jobs' workers, as `busy_workers` finds them, joined in)."""
    rows = conn.execute(_SEEN_AND_BUSY, {"since": since}).all()
    return [(_state(r), bool(r.busy)) for r in rows]


def _state(r: Any) -> WorkerState:
    return WorkerState(
        worker_id=r.worker_id,
        node_id=r.node_id,
        gpu_name=r.gpu_name,
        vram_mb=r.vram_mb,
        max_pixels=r.max_pixels,
        kinds=_names(r.kinds),
        resident_combos=_names(r.resident_combos),
        resident_models=_names(r.resident_models),
        cached_models=_names(r.cached_models),
        free_disk_bytes=r.free_disk_bytes,
        download_bytes_per_s=r.download_bytes_per_s,
        updated_at=r.updated_at,
    )


@functools.lru_cache(maxsize=4096)
def _names(stored: str) -> frozenset[str]:
    """A stored JSON list of names as a set, parsed once per distinct list: every submit reads
    every recently seen worker's lists, which change far less often than they are read."""
    return frozenset(json.loads(stored))


def busy_workers(conn: Connection) -> list[BusyWorker]:
    """Workers with a running job (through `ix_jobs_lease`: as many rows as running jobs)."""
    rows = conn.execute(
        select(attempts.c.worker_id, jobs.c.started_at, jobs.c.cost_units)
        .join(attempts, attempts.c.id == jobs.c.current_attempt_id)
        .where(jobs.c.status == JobStatus.running.value)
    ).all()
    return [BusyWorker(r.worker_id, r.started_at or 0.0, r.cost_units) for r in rows]


def measured_seconds_per_unit(conn: Connection, since: float, limit: int) -> dict[str, float]:
    """Each worker's measured seconds per cost unit over its jobs that succeeded since `since`
    (at most the `limit` latest, through `ix_jobs_finished` and `ix_attempts_job`: bounded by
    recent completions, not by the table): the attempt's whole lease, claim to end, as a busy
    worker's time to be free again includes its loads and uploads. Workers with no such job
    are absent."""
    rows = conn.execute(
        select(attempts.c.worker_id, attempts.c.started_at, attempts.c.ended_at, jobs.c.cost_units)
        .join(attempts, attempts.c.job_id == jobs.c.id)
        .where(
            jobs.c.finished_at >= since,
            jobs.c.status == JobStatus.succeeded.value,
            attempts.c.outcome == AttemptOutcome.succeeded.value,
            attempts.c.ended_at.is_not(None),
            jobs.c.cost_units > 0,
        )
        .order_by(jobs.c.finished_at.desc())
        .limit(limit)
    ).all()
    seconds: dict[str, float] = {}
    units: dict[str, float] = {}
    for r in rows:
        seconds[r.worker_id] = seconds.get(r.worker_id, 0.0) + max(0.0, r.ended_at - r.started_at)
        units[r.worker_id] = units.get(r.worker_id, 0.0) + r.cost_units
    return {worker: seconds[worker] / units[worker] for worker in units}
