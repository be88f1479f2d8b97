"""Fixtures shared by unit and API tests: a fresh store per test (SQLite and PostgreSQL), keys, a
registered model, a hand-driven clock, and the tiny demo model for the engine tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from imagefleet.config import Settings
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key
from imagefleet.store.models import Model, register_model
from imagefleet.store.tables import metadata
from tests.harness.processes import stop_all
from tests.seaweed import seaweed_fixture  # noqa: F401 (one SeaweedFS server per session)

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


# The PostgreSQL tests create (and drop) their own database through this server.
PG_ADMIN_URL = os.environ.get("IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ", ".join(table.name for table in metadata.sorted_tables)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"imagefleet_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL tests need a server at {PG_ADMIN_URL} ({exc}); start it with "
            "scripts/ensure-postgres or point IMAGEFLEET_TEST_PG_URL at one"
        )
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    Database(url).upgrade()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'imagefleet.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store and API test runs on both dialects; PostgreSQL tables start empty. A module
    picks other dialects by parametrizing it indirectly (see the fuzz test)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_url")
    database = Database(url)
    with database.write() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    database.dispose()
    return url


@dataclass
class PgFleet:
    url: str
    client_key: str
    worker_key: str


@pytest.fixture
def empty_pg(pg_url: str) -> PgFleet:
    """An empty PostgreSQL database with a client key, a worker key and the `demo` model."""
    database = Database(pg_url)
    with database.write() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
        _, client = create_key(conn, name="c", scope="client", tier="free", now=1.0)
        _, worker = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        register_model(
            conn, name="demo", kind="checkpoint", source="/m", sha256="d" * 64, size_bytes=1, now=1
        )
    database.dispose()
    return PgFleet(pg_url, client, worker)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        lease_seconds=10,
        max_side=1024,
        max_pixels=512 * 512,
        retry_backoff_seconds=0,  # tests of backoff turn it on
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


@pytest.fixture(scope="module")
def one_cpu_thread() -> Iterator[None]:
    """Runs the tiny models on one torch thread: they gain nothing from intra-op threads, and
    on a busy machine threads that wait on each other make them several times slower. Modules
    that run models use it with `pytestmark = pytest.mark.usefixtures("one_cpu_thread")`."""
    import torch  # here, not at the top: most tests never touch torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo model saved in diffusers layout, built once per session."""
    from imagefleet.demo_model import save_demo_model

    return save_demo_model(tmp_path_factory.mktemp("demo") / "pipeline")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lifecycle(db: Database, settings: Settings, clock: Clock) -> JobLifecycle:
    return JobLifecycle(db, settings, clock=clock)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stops any orchestrator or worker a test left running (a test cut off by its timeout in
    the middle of a fixture's teardown). The harness also stops them at exit, but pytest-xdist
    ends its worker processes without running exit handlers."""
    stop_all()
