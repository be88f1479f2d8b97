"""Fixtures shared by unit and API tests: a fresh SQLite store per test, keys, a model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefleet.config import Settings
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key
from imagefleet.store.models import Model, register_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Clock:
    """A hand-driven clock so lease expiry is tested without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Keys:
    alice: ApiKey
    alice_token: str
    bob: ApiKey
    bob_token: str
    worker: ApiKey
    worker_token: str
    admin: ApiKey
    admin_token: str


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", lease_seconds=10, max_side=1024, max_pixels=512 * 512
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def keys(db: Database) -> Keys:
    made = []
    with db.write() as conn:
        for name, scope, tier in (
            ("alice", "client", "free"),
            ("bob", "client", "paid"),
            ("worker", "worker", "free"),
            ("admin", "admin", "free"),
        ):
            made.extend(create_key(conn, name=name, scope=scope, tier=tier, now=1.0))  # type: ignore[arg-type]
    return Keys(*made)


@pytest.fixture
def model(db: Database) -> Model:
    with db.write() as conn:
        return register_model(
            conn,
            name="demo",
            kind="checkpoint",
            source="/models/demo",
            sha256="d" * 64,
            size_bytes=1234,
            now=1.0,
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lifecycle(db: Database, settings: Settings, clock: Clock) -> JobLifecycle:
    return JobLifecycle(db, settings, clock=clock)
