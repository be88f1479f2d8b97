"""What the control loop reads each pass: the queued and running work, what each node's workers
are doing, when each pool was last busy, quarantined nodes, and recent attempts (the measured
seconds per cost unit). One read transaction, a handful of indexed queries."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.scaling.demand import NodeActivity, WorkItem
from imagefleet.scaling.pricing import AttemptRecord
from imagefleet.store.tables import attempts, jobs, models, nodes, workers

RECENT_ATTEMPTS = 500


@dataclass(frozen=True)
class FleetSnapshot:
    items: list[WorkItem]
    activity: dict[str, NodeActivity]
    last_busy_at: dict[str, float]
    quarantined: dict[str, float]  # node id -> quarantined at
    recent: list[AttemptRecord]


def snapshot(
    conn: Connection,
    seen_since: float,
    tier_priority: dict[str, int],
    *,
    measure: bool = False,
) -> FleetSnapshot:
    """`measure`: also read recent succeeded attempts (only the throughput rule needs them)."""
    work = conn.execute(
        select(
            jobs.c.kind,
            jobs.c.pixels,
            jobs.c.min_vram_mb,
            jobs.c.required_vram_mb,
            jobs.c.tier,
            jobs.c.cost_units,
            jobs.c.created_at,
            jobs.c.status,
            jobs.c.progress_step,
            jobs.c.progress_total,
            models.c.name.label("model"),
            attempts.c.pool,
        )
        .select_from(
            jobs.outerjoin(models, models.c.id == jobs.c.model_id).outerjoin(
                attempts, attempts.c.id == jobs.c.current_attempt_id
            )
        )
        .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
    ).all()
    items = []
    for row in work:
        running = row.status == JobStatus.running.value
        vram = max(row.min_vram_mb or 0, row.required_vram_mb or 0) or None
        done = row.progress_step / row.progress_total if row.progress_total else 0.0
        items.append(
            WorkItem(
                kind=row.kind,
                pixels=row.pixels,
                min_vram_mb=vram,
                model=row.model,
                tier=row.tier,
                priority=tier_priority.get(row.tier, 0),
                cost_units=row.cost_units or 0.0,
                created_at=row.created_at,
                running=running,
                pool=row.pool if running else None,
                remaining=1.0 - done if running else 1.0,
            )
        )

    busy_nodes = {
        node: started
        for node, started in conn.execute(
            select(attempts.c.node_id, attempts.c.started_at).where(
                attempts.c.outcome == AttemptOutcome.running.value
            )
        ).all()
    }
    seen = conn.execute(
        select(
            workers.c.node_id,
            func.max(workers.c.pool).label("pool"),
            func.min(workers.c.first_seen_at).label("first_seen"),
            func.max(workers.c.drain_requested_at).label("drained"),
        )
        # A busy worker heartbeats but does not claim, so it is not "seen" during a long job.
        .where(or_(workers.c.last_seen_at >= seen_since, workers.c.node_id.in_(list(busy_nodes))))
        .group_by(workers.c.node_id)
    ).all()
    # Per node through ix_attempts_node_outcome, not a scan of every attempt ever made.
    last_end = dict(
        conn.execute(
            select(attempts.c.node_id, func.max(attempts.c.ended_at))
            .where(
                attempts.c.node_id.in_([row.node_id for row in seen]),
                attempts.c.ended_at.is_not(None),
            )
            .group_by(attempts.c.node_id)
        ).all()
    )
    activity: dict[str, NodeActivity] = {}
    last_busy_at: dict[str, float] = {}
    for node in seen:
        activity[node.node_id] = NodeActivity(
            busy=node.node_id in busy_nodes,
            idle_since=last_end.get(node.node_id) or node.first_seen,
            drain_requested=node.drained is not None,
        )
        ended = last_end.get(node.node_id)
        if node.pool is not None and ended is not None:
            last_busy_at[node.pool] = max(ended, last_busy_at.get(node.pool, ended))
    for busy_node in busy_nodes:  # a busy worker that has not claimed lately is still busy
        activity.setdefault(busy_node, NodeActivity(busy=True))

    quarantined = dict(
        conn.execute(
            select(nodes.c.id, nodes.c.quarantined_at).where(nodes.c.quarantined_at.is_not(None))
        ).all()
    )
    recent = _recent_attempts(conn) if measure else []
    return FleetSnapshot(items, activity, last_busy_at, quarantined, recent)


def _recent_attempts(conn: Connection) -> list[AttemptRecord]:
    return [
        AttemptRecord(
            job_id=row.job_id,
            attempt_id=row.id,
            worker_id=row.worker_id,
            pool=row.pool,
            gpu=row.gpu,
            claimed_at=row.started_at,
            ended_at=row.ended_at,
            outcome=row.outcome,
            cost_units=row.cost_units or 0.0,
        )
        for row in conn.execute(
            select(attempts, jobs.c.cost_units)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.outcome == AttemptOutcome.succeeded.value)
            .order_by(attempts.c.ended_at.desc())
            .limit(RECENT_ATTEMPTS)
        )
    ]
