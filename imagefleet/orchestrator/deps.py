"""Typed FastAPI dependencies: what a route may ask for, instead of reaching into app.state.

Every one is `async def` although none awaits anything: FastAPI runs a plain `def` dependency
in its thread pool, and a hand-off to a pool thread and back for each of a request's two or
three dependencies was a measurable part of a request's CPU (docs/benchmarks.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagefleet.artifacts.base import ArtifactStore
from imagefleet.config import Settings
from imagefleet.orchestrator.auth import admin_key, client_key, worker_key
from imagefleet.orchestrator.autoscaler_pools import PoolService
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey


async def _lifecycle(request: Request) -> JobLifecycle:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    return lifecycle


async def _artifacts(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _work_signal(request: Request) -> WorkSignal:
    signal: WorkSignal = request.app.state.work_signal
    return signal


Lifecycle = Annotated[JobLifecycle, Depends(_lifecycle)]
Artifacts = Annotated[ArtifactStore, Depends(_artifacts)]
AppSettings = Annotated[Settings, Depends(_settings)]
Db = Annotated[Database, Depends(_database)]
Signal = Annotated[WorkSignal, Depends(_work_signal)]
ClientKey = Annotated[ApiKey, Depends(client_key)]
WorkerKey = Annotated[ApiKey, Depends(worker_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]


# --- autoscaling (issue 13) ---
async def _pools(request: Request) -> PoolService:
    service: PoolService = request.app.state.pools
    return service


Pools = Annotated[PoolService, Depends(_pools)]
