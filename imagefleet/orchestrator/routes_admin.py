"""Admin endpoints: model registration, node health and the node event log (what an
autoscaler follows)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from imagefleet.api_views import ModelView, NodeEventView, NodeView
from imagefleet.blocking import run_blocking
from imagefleet.errors import NotFound
from imagefleet.models.registry import Registration, RegistrationError, register
from imagefleet.orchestrator.deps import AdminKey, Db, Lifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.orchestrator.views import model_view, node_event_view, node_view
from imagefleet.protocol import ModelRegistration

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=DocumentedRoute)


@router.get("/nodes", response_model=list[NodeView], summary="Nodes, their health and quarantine")
def list_nodes(key: AdminKey, lifecycle: Lifecycle) -> list[NodeView]:
    return [node_view(node) for node in lifecycle.health.nodes(lifecycle.clock())]


@router.post("/nodes/{node_id}/release", response_model=list[NodeView], summary="Lift a quarantine")
def release_node(key: AdminKey, lifecycle: Lifecycle, node_id: str) -> list[NodeView]:
    if not lifecycle.health.release(node_id, lifecycle.clock()):
        raise NotFound(f"node {node_id!r} is not quarantined")
    return [node for node in list_nodes(key, lifecycle) if node.id == node_id]


@router.get(
    "/events",
    response_model=list[NodeEventView],
    summary="Node events after an id (poll with the last id seen)",
)
def list_events(
    key: AdminKey,
    lifecycle: Lifecycle,
    after: int = Query(0, ge=0, le=2**31 - 1),
    limit: int = Query(100, ge=1, le=1000),
) -> list[NodeEventView]:
    return [node_event_view(event) for event in lifecycle.health.events(after, limit)]


@router.post(
    "/models",
    status_code=201,
    response_model=ModelView,
    summary="Register a model (a new version when the name exists and the content changed)",
)
async def register_model(key: AdminKey, body: ModelRegistration, db: Db) -> ModelView:
    request = Registration(
        name=body.name,
        source=body.source,
        kind=body.kind,
        base=body.base,
        config=body.config_source,
        sha256=body.sha256,
        size_bytes=body.size_bytes,
        trigger_words=tuple(body.trigger_words),
        fetch_configs=body.fetch_configs,
    )
    try:
        model = await run_blocking(register, db, request)
    except RegistrationError as exc:
        raise exc.as_invalid_field() from exc
    return model_view(model)
