"""The claim's candidate preselection: a bounded set of queued jobs gathered by index probes, every
hard limit applied in the SQL, so a claim costs the same with 1,000 or 1,000,000 jobs queued.

Probes (sizes from the policy's `scheduling.decisions.Selection`):

- **queue head per priority level** (`ix_jobs_queue`): the oldest jobs of the highest priority,
  then of each lower level in turn (a skip scan: each level starts below the lowest priority the
  previous probe returned), so free jobs near the aging bound are seen while paid ones queue;
- **owners** (`ix_jobs_queued_owner`): the oldest job of each of a few owners with queued work,
  walked from a random point of the owner-id space (wrapping), so a client with one job is
  seen beside a 10,000-job batch that fills the queue head;
- **resident combos** (`ix_jobs_queued_combo`): the oldest jobs of each combo on the worker's GPU;
- **checkpoints** (`ix_jobs_queued_checkpoint`; `jobs.model_id` is the job's checkpoint and
  `ix_models_sha256` maps the worker's sha256s to model ids): the oldest jobs needing each of a
  few checkpoints on the worker's GPU, then on its disk.

`store.claim_probes` runs every probe as one union beside the node's blocks; the ids found,
deduplicated, are read here by primary key and locked with SKIP LOCKED on PostgreSQL, so
concurrent claimers take disjoint sets and never wait on each other; SQLite serializes writers
anyway.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    and_,
    bindparam,
    or_,
    select,
    text,
)

from imagefleet.protocol import JobStatus, ModelRole
from imagefleet.store.attempts import COUNTED_OUTCOMES, failed_nodes
from imagefleet.store.bound_lists import InBoundList
from imagefleet.store.job_models import JobModel
from imagefleet.store.models import to_model
from imagefleet.store.tables import attempts, job_models, jobs, models
from imagefleet.store.tables_scheduling import owner_service

QUEUED = JobStatus.queued.value


@dataclass(frozen=True)
class WorkerLimits:
    """What the claiming worker can run: filtered in SQL, before any ranking, so that jobs it
    cannot run never hide jobs it can."""

    node_id: str
    kinds: list[str]
    max_pixels: int
    vram_mb: int  # 0: not reported (a CPU worker); VRAM requirements are then not applied


@dataclass(frozen=True)
class Probes:
    """What to look for besides the queue head: the worker's resident combos and checkpoints
    (most recent first) and its cached checkpoints."""

    resident_combos: Sequence[str] = ()
    resident_models: Sequence[str] = ()
    cached_models: Sequence[str] = ()


@dataclass(frozen=True)
class QueuedJob:
    """What the scheduling policy needs to know of a queued job."""

    id: str
    owner_key_id: str
    tier: str
    kind: str
    priority: int
    pixels: int
    created_at: float
    failed_nodes: frozenset[str]
    min_vram_mb: int | None  # preference after running out of memory (not a hard limit)
    required_vram_mb: int | None
    allow_same_node: bool
    combo_key: str | None
    cost_units: float | None
    models: tuple[tuple[str, int, str], ...]  # (sha256, size, role)
    combo: tuple[JobModel, ...] = ()  # the same models in full, for the assignment
    owner_served_at: float | None = None  # the owner's last claim (`store.owner_service`)


_COLUMNS = (
    jobs.c.id,
    jobs.c.owner_key_id,
    jobs.c.tier,
    jobs.c.kind,
    jobs.c.priority,
    jobs.c.pixels,
    jobs.c.created_at,
    jobs.c.min_vram_mb,
    jobs.c.required_vram_mb,
    jobs.c.allow_same_node,
    jobs.c.same_node_after,
    jobs.c.attempts,
    jobs.c.combo_key,
    jobs.c.cost_units,
)


def hard_limits(worker: WorkerLimits, now: float) -> list[ColumnElement[bool]]:
    """The WHERE conditions every probe shares: queued, a kind the worker serves, its pixels, its
    VRAM (when reported), not backing off, and never failed on this node unless it may retry
    there now."""
    kinds = jobs.c.kind.in_(worker.kinds)
    return _limits(worker.node_id, kinds, worker.max_pixels, now, worker.vram_mb or None)


def _limits(
    node_id: Any, kinds: ColumnElement[bool], max_pixels: Any, now: Any, vram_mb: Any | None
) -> list[ColumnElement[bool]]:
    """`hard_limits` with each value given either as itself or as a bound parameter (the claim's
    statements are built once per shape, with bound parameters); `kinds`: the condition on the
    job's kind."""
    failed_here = (
        select(attempts.c.id)
        .where(
            attempts.c.job_id == jobs.c.id,
            attempts.c.node_id == node_id,
            # Not `IN (...)`: a literal list is an expanding parameter too, rendered again at
            # every execution in every probe branch (store/bound_lists.py).
            or_(*(attempts.c.outcome == outcome for outcome in COUNTED_OUTCOMES)),
        )
        .exists()
    )
    conditions: list[ColumnElement[bool]] = [
        jobs.c.status == QUEUED,
        kinds,
        jobs.c.pixels <= max_pixels,
        or_(jobs.c.run_after.is_(None), jobs.c.run_after <= now),
        # Most jobs were never tried, so the subquery rarely runs.
        or_(
            jobs.c.attempts == 0,
            and_(
                jobs.c.allow_same_node.is_(True),
                or_(jobs.c.same_node_after.is_(None), jobs.c.same_node_after <= now),
            ),
            ~failed_here,
        ),
    ]
    if vram_mb is not None:
        conditions.append(
            or_(jobs.c.required_vram_mb.is_(None), jobs.c.required_vram_mb <= vram_mb)
        )
    return conditions


def bound_limits(vram: bool) -> list[ColumnElement[bool]]:
    return _limits(
        bindparam("node"),
        InBoundList(jobs.c.kind, "kinds"),
        bindparam("max_pixels"),
        bindparam("now"),
        bindparam("vram") if vram else None,
    )


@functools.lru_cache(maxsize=4)
def _rows_by_id(vram: bool) -> Executable:
    """The probes' jobs by primary key, locked with SKIP LOCKED on PostgreSQL, the hard limits
    checked again under the lock; built once."""
    # `status || ''`: SQLite without statistics would otherwise read this through an index on
    # status (every queued job) instead of the primary key.
    recheck = [jobs.c.status.concat("") == QUEUED, *bound_limits(vram)[1:]]
    # The owners' last claims and the jobs' models in full come along (round robin between
    # owners; the job taken needs its combo for the assignment): no reads of their own. A job
    # is one row per model, in the combo's order.
    joined = jobs.outerjoin(
        owner_service, owner_service.c.owner_key_id == jobs.c.owner_key_id
    ).outerjoin(job_models, job_models.c.job_id == jobs.c.id)
    joined = joined.outerjoin(models, models.c.id == job_models.c.model_id)
    in_combo = (job_models.c.role, job_models.c.weight, *models.c)
    return (
        select(*_COLUMNS, owner_service.c.served_at, *(c.label(f"m_{c.name}") for c in in_combo))
        .select_from(joined)
        .where(InBoundList(jobs.c.id, "ids"), *recheck)
        .order_by(jobs.c.id, job_models.c.position)
        .with_for_update(skip_locked=True, of=jobs)
    )


@dataclass(frozen=True)
class Gathered:
    """The candidates, and how many jobs the probes matched before locking: on PostgreSQL a job
    another claim has locked is matched but not returned, so no candidates with some matched is
    "taken by others", not "nothing this worker can run"."""

    jobs: list[QueuedJob]
    matched: int


def lock_candidates(
    conn: Connection, ids: Sequence[str], values: dict[str, Any], vram: bool, now: float
) -> Gathered:
    """The jobs a look found (`store.claim_probes.look`: `ids`, with the values its probes were
    bound to), by primary key, each with its models and failure history, locked with SKIP
    LOCKED on PostgreSQL (the hard limits checked again under the lock). A statement of its own
    after the look: a planner without fresh statistics could turn `id IN (union)` into a scan
    of the queue."""
    if not ids:
        return Gathered([], 0)
    rows = conn.execute(_rows_by_id(vram), {**values, "ids": list(ids)}).all()
    return Gathered(_queued_jobs(conn, rows, now), len(ids))


# A skip scan over ix_jobs_queued_owner in one statement: each step is one index seek to the next
# owner with queued work, from a random point of the id space, wrapping around once.
_OWNERS_SQL = text(
    """
    WITH RECURSIVE walk(owner, n) AS (
        SELECT (SELECT min(owner_key_id) FROM jobs
                WHERE status = :queued AND owner_key_id > :start), 1
        UNION ALL
        SELECT (SELECT min(owner_key_id) FROM jobs
                WHERE status = :queued AND owner_key_id > walk.owner), n + 1
        FROM walk WHERE walk.owner IS NOT NULL AND n < :count
    ),
    wrapped(owner, n) AS (
        SELECT (SELECT min(owner_key_id) FROM jobs WHERE status = :queued), 1
        UNION ALL
        SELECT (SELECT min(owner_key_id) FROM jobs
                WHERE status = :queued AND owner_key_id > wrapped.owner), n + 1
        FROM wrapped
        WHERE wrapped.owner IS NOT NULL AND wrapped.owner < :start AND n < :count
    )
    SELECT owner FROM walk WHERE owner IS NOT NULL
    UNION
    SELECT owner FROM wrapped WHERE owner IS NOT NULL AND owner <= :start
    """
)


def queued_owners(conn: Connection, count: int) -> list[str]:
    """Up to about `count` owners with queued jobs (each direction of the walk stops at `count`),
    walked from a random point of the id space: one statement of index seeks, whatever the number
    of owners or jobs."""
    params = {"queued": QUEUED, "start": secrets.token_hex(16), "count": count}
    return list(conn.execute(_OWNERS_SQL, params).scalars())[:count]


_CHECKPOINTS = select(models.c.id, models.c.sha256).where(
    models.c.sha256.in_(bindparam("shas", expanding=True)), models.c.kind == "checkpoint"
)


def checkpoint_ids(conn: Connection, shas: Sequence[str], count: int) -> list[int]:
    """The registered checkpoints among the first `count` sha256s that name one, in that order."""
    if not shas or not count:
        return []
    return first_checkpoints(shas, checkpoints_by_sha(conn, shas), count)


def checkpoints_by_sha(conn: Connection, shas: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Each sha256's registered checkpoints (model ids; none for a sha256 that names none)."""
    found: dict[str, list[int]] = {sha: [] for sha in shas}
    for row in conn.execute(_CHECKPOINTS, {"shas": list(shas)}).all():
        found[row.sha256].append(row.id)
    return {sha: tuple(ids) for sha, ids in found.items()}


def first_checkpoints(
    shas: Sequence[str], by_sha: dict[str, tuple[int, ...]], count: int
) -> list[int]:
    """`checkpoint_ids` from `checkpoints_by_sha`'s answer."""
    ids: list[int] = []
    for sha in shas:
        ids.extend(by_sha.get(sha, ()))
        if len(ids) >= count:
            break
    return ids[:count]


def _queued_jobs(conn: Connection, joined: Sequence[Any], now: float) -> list[QueuedJob]:
    """The candidates from `_rows_by_id`'s rows (one per model of each job)."""
    rows: list[Any] = []
    combos: dict[str, list[JobModel]] = {}
    for row in joined:
        if row.id not in combos:
            rows.append(row)
            combos[row.id] = []
        if row.m_id is not None:
            combos[row.id].append(_job_model(row))
    failed = failed_nodes(conn, [row.id for row in rows if row.attempts])
    return [
        QueuedJob(
            id=r.id,
            owner_key_id=r.owner_key_id,
            tier=r.tier,
            kind=r.kind,
            priority=r.priority,
            pixels=r.pixels,
            created_at=r.created_at,
            failed_nodes=failed.get(r.id, frozenset()),
            min_vram_mb=r.min_vram_mb,
            required_vram_mb=r.required_vram_mb,
            allow_same_node=bool(r.allow_same_node) and (r.same_node_after or 0.0) <= now,
            combo_key=r.combo_key,
            cost_units=r.cost_units,
            models=tuple(
                (item.model.sha256, int(item.model.size_bytes), item.role.value)
                for item in combos[r.id]
            ),
            combo=tuple(combos[r.id]),
            owner_served_at=r.served_at,
        )
        for r in rows
    ]


def _job_model(row: Any) -> JobModel:
    """One model of a candidate's combo, from its `m_`-labelled columns."""
    values = row._mapping
    model = to_model({column.name: values[f"m_{column.name}"] for column in models.c})
    return JobModel(ModelRole(values["m_role"]), model, values["m_weight"])
