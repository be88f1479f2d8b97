"""Workers as last seen through their claims (for the API, the dashboard and the autoscaler)."""

from __future__ import annotations

from sqlalchemy import Connection, insert, update

from imagefleet.protocol import ClaimRequest
from imagefleet.store.tables import workers


def touch_worker(conn: Connection, request: ClaimRequest, now: float) -> None:
    """Upserts the worker row with its latest capabilities and sighting."""
    capabilities = request.capabilities.model_dump_json()
    result = conn.execute(
        update(workers)
        .where(workers.c.id == request.worker_id)
        .values(node_id=request.node_id, capabilities=capabilities, last_seen_at=now)
    )
    if result.rowcount == 0:
        conn.execute(
            insert(workers).values(
                id=request.worker_id,
                node_id=request.node_id,
                capabilities=capabilities,
                first_seen_at=now,
                last_seen_at=now,
            )
        )
