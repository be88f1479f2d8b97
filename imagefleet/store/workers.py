"""Workers as last seen through their claims (for the API, the dashboard and the autoscaler)."""

from __future__ import annotations

import json

from sqlalchemy import Connection, insert, select, update

from imagefleet.protocol import ClaimRequest
from imagefleet.store.tables import workers

# A worker may report thousands of cached files; the dashboard shows a count and the first ones,
# so each claim writes a bounded row.
CACHED_MODELS_KEPT = 64


def touch_worker(conn: Connection, request: ClaimRequest, now: float) -> None:
    """Upserts the worker row with its latest capabilities and sighting."""
    seen = {
        "node_id": request.node_id,
        "capabilities": request.capabilities.model_dump_json(),
        "resident_models": json.dumps(request.resident_models),
        "cached_models": json.dumps(
            {
                "count": len(request.cached_models),
                "first": request.cached_models[:CACHED_MODELS_KEPT],
            }
        ),
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
    from imagefleet.protocol import WorkerCapabilities

    row = conn.execute(select(workers.c.capabilities).where(workers.c.id == worker_id)).first()
    return WorkerCapabilities.model_validate_json(row.capabilities).vram_mb if row else None
