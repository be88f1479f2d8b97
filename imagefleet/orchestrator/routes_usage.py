"""Usage and cost: a client's own (`/v1/usage`), the fleet's (`/v1/admin/usage`), and the
Prometheus `/metrics`."""

from __future__ import annotations

import time

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from imagefleet.blocking import run_blocking
from imagefleet.orchestrator import usage
from imagefleet.orchestrator.deps import AdminKey, ClientKey, Db, Pools
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.scaling.wire import FleetUsageView, KeyUsageView

DAY = 86_400.0
router = APIRouter(prefix="/v1", tags=["usage"], route_class=DocumentedRoute)


@router.get(
    "/usage",
    response_model=KeyUsageView,
    summary="Your jobs, images, GPU seconds and cost, by day and kind",
)
async def get_usage(
    key: ClientKey,
    db: Db,
    pools: Pools,
    days: int = Query(30, ge=1, le=366, description="The last N days, today included."),
) -> KeyUsageView:
    now = time.time()
    start = (now // DAY - (days - 1)) * DAY
    prices = await run_blocking(pools.prices)
    return await run_blocking(usage.key_usage, db, key.id, prices, start, now)


@router.get(
    "/admin/usage",
    response_model=FleetUsageView,
    summary="The fleet per pool and GPU type: images/hour, s/image, images per dollar, idle share",
)
async def get_fleet_usage(
    key: AdminKey,
    db: Db,
    pools: Pools,
    hours: float = Query(24.0, gt=0, le=24 * 366, description="The last N hours."),
) -> FleetUsageView:
    now = time.time()
    prices = await run_blocking(pools.prices)
    return await run_blocking(usage.admin_usage, db, prices, now - hours * 3600, now)


metrics_router = APIRouter(tags=["ops"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics of the whole fleet (any replica answers for all)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        503: {"description": "The database is unavailable; retry after Retry-After"},
    },
)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_blocking(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
