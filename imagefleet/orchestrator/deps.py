"""Typed FastAPI dependencies: what a route may ask for, instead of reaching into app.state."""

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


def _lifecycle(request: Request) -> JobLifecycle:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    return lifecycle


def _artifacts(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _work_signal(request: Request) -> WorkSignal:
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
def _pools(request: Request) -> PoolService:
    service: PoolService = request.app.state.pools
    return service


Pools = Annotated[PoolService, Depends(_pools)]
