"""Autoscaling endpoints: pools (settings, status, workers, live edits) and the decision log.
Each route translates one request into one PoolService call."""

from __future__ import annotations

import time

from fastapi import APIRouter, Path, Query

from imagefleet.orchestrator.deps import AdminKey, Pools
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.scaling.pools import NAME_PATTERN
from imagefleet.scaling.wire import DecisionView, PoolEdit, PoolView

router = APIRouter(prefix="/v1/admin", tags=["autoscaling"], route_class=DocumentedRoute)
PoolName = Path(pattern=NAME_PATTERN, description="The pool's name, as in the pools file.")


@router.get("/pools", response_model=list[PoolView], summary="Pools, their workers and status")
def list_pools(key: AdminKey, pools: Pools) -> list[PoolView]:
    return pools.views(time.time())


@router.get("/pools/{name}", response_model=PoolView, summary="One pool")
def get_pool(key: AdminKey, pools: Pools, name: str = PoolName) -> PoolView:
    return pools.view(name, time.time())


@router.patch(
    "/pools/{name}",
    response_model=PoolView,
    summary="Change a pool's limits or price live (the pools file no longer overrides them)",
    responses=error_responses(400, 413),
)
def edit_pool(key: AdminKey, pools: Pools, body: PoolEdit, name: str = PoolName) -> PoolView:
    return pools.edit(name, body, time.time())


@router.post(
    "/pools/{name}/reset",
    response_model=PoolView,
    summary="Put the pools file's settings back after live edits",
)
def reset_pool(key: AdminKey, pools: Pools, name: str = PoolName) -> PoolView:
    return pools.reset(name, time.time())


@router.get(
    "/scaling/decisions",
    response_model=list[DecisionView],
    summary="The autoscaler's decisions that changed something, newest first",
)
def list_decisions(
    key: AdminKey,
    pools: Pools,
    pool: str | None = Query(None, pattern=NAME_PATTERN),
    limit: int = Query(100, ge=1, le=1000),
) -> list[DecisionView]:
    return pools.decisions(pool, limit)
