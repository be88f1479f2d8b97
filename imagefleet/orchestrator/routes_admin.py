"""Admin endpoints: node health and the node event log (what an autoscaler follows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from imagefleet.orchestrator.auth import admin_key
from imagefleet.orchestrator.errors import NotFound
from imagefleet.orchestrator.lifecycle import JobLifecycle, to_datetime
from imagefleet.protocol import NodeEventView, NodeView
from imagefleet.store.keys import ApiKey

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Key = Annotated[ApiKey, Depends(admin_key)]


def _lifecycle(request: Request) -> JobLifecycle:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    return lifecycle


@router.get("/nodes", response_model=list[NodeView], summary="Nodes, their health and quarantine")
def list_nodes(request: Request, key: Key) -> list[NodeView]:
    lifecycle = _lifecycle(request)
    return [
        NodeView(
            id=node.id,
            status="quarantined" if node.quarantined_at else "active",
            reason=node.reason,
            quarantined_at=to_datetime(node.quarantined_at) if node.quarantined_at else None,
            recent_failures=node.recent_failures,
            last_seen_at=to_datetime(node.last_seen_at) if node.last_seen_at else None,
        )
        for node in lifecycle.health.nodes(lifecycle.clock())
    ]


@router.post("/nodes/{node_id}/release", response_model=list[NodeView], summary="Lift a quarantine")
def release_node(request: Request, key: Key, node_id: str) -> list[NodeView]:
    lifecycle = _lifecycle(request)
    if not lifecycle.health.release(node_id, lifecycle.clock()):
        raise NotFound(f"node {node_id!r} is not quarantined")
    return [node for node in list_nodes(request, key) if node.id == node_id]


@router.get(
    "/events",
    response_model=list[NodeEventView],
    summary="Node events after an id (poll with the last id seen)",
)
def list_events(
    request: Request,
    key: Key,
    after: int = Query(0, ge=0, le=2**31 - 1),
    limit: int = Query(100, ge=1, le=1000),
) -> list[NodeEventView]:
    return [
        NodeEventView(
            id=event.id,
            node_id=event.node_id,
            kind=event.kind,
            reason=event.reason,
            created_at=to_datetime(event.created_at),
        )
        for event in _lifecycle(request).health.events(after, limit)
    ]
