"""Workers as last seen through their claims (for the API, the dashboard and the autoscaler).
What each worker holds (resident and cached models) is in `worker_state`, not here."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from imagefleet.store.tables import workers
from imagefleet.worker_protocol import ClaimRequest

# A drain requested without a reason (workers.drain_reason NULL) is reported as this.
DRAIN_DEFAULT = "the autoscaler is removing this worker"


def touch_worker(conn: Connection, request: ClaimRequest, now: float) -> None:
    """Upserts the worker row with its latest capabilities and sighting."""
    seen = {
        "node_id": request.node_id,
        "capabilities": request.capabilities.model_dump_json(),
        "pool": request.pool,
        "last_seen_at": now,
    }
    result = conn.execute(update(workers).where(workers.c.id == request.worker_id).values(seen))
    if result.rowcount == 0:
        conn.execute(insert(workers).values(id=request.worker_id, first_seen_at=now, **seen))


def live_nodes(conn: Connection, seen_since: float) -> frozenset[str]:
    """Nodes with a worker that claimed since `seen_since`."""
    rows = conn.execute(
        select(workers.c.node_id).where(workers.c.last_seen_at >= seen_since).distinct()
    ).scalars()
    return frozenset(rows)


def vram_mb(conn: Connection, worker_id: str) -> int | None:
    """The VRAM the worker reported in its last claim."""
    from imagefleet.worker_protocol import WorkerCapabilities

    row = conn.execute(select(workers.c.capabilities).where(workers.c.id == worker_id)).first()
    return WorkerCapabilities.model_validate_json(row.capabilities).vram_mb if row else None


def gpu_names(conn: Connection, worker_ids: list[str]) -> dict[str, str]:
    """The GPU name each worker reported in its last claim (for pricing its lease time)."""
    from imagefleet.worker_protocol import WorkerCapabilities

    if not worker_ids:
        return {}
    rows = conn.execute(
        select(workers.c.id, workers.c.capabilities).where(workers.c.id.in_(worker_ids))
    ).all()
    return {
        row.id: WorkerCapabilities.model_validate_json(row.capabilities).gpu_name for row in rows
    }


def drain_reason(conn: Connection, node_id: str) -> str | None:
    """Why the autoscaler asked the workers of this node to drain, if it did. By node, not by
    worker: a worker restarted in the same pod or process slot is being removed too."""
    row = conn.execute(
        select(workers.c.drain_reason)
        .where(workers.c.node_id == node_id, workers.c.drain_requested_at.is_not(None))
        .limit(1)
    ).first()
    return (row.drain_reason or DRAIN_DEFAULT) if row else None


def request_drain(conn: Connection, node_ids: list[str], reason: str, now: float) -> int:
    """Asks the workers of these nodes to finish their job and claim no more."""
    if not node_ids:
        return 0
    return int(
        conn.execute(
            update(workers)
            .where(workers.c.node_id.in_(node_ids), workers.c.drain_requested_at.is_(None))
            .values(drain_requested_at=now, drain_reason=reason)
        ).rowcount
    )


def cancel_drain(conn: Connection, node_ids: list[str]) -> int:
    """Keeps these nodes after all (demand came back before they were removed)."""
    if not node_ids:
        return 0
    return int(
        conn.execute(
            update(workers)
            .where(workers.c.node_id.in_(node_ids))
            .values(drain_requested_at=None, drain_reason=None)
        ).rowcount
    )
