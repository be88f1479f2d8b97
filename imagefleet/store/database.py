"""Connections, transactions and migrations: the only place that knows which SQL dialect runs.

SQLite gets WAL mode, a busy timeout and `BEGIN IMMEDIATE` for write transactions, so that two
claimers never both read a job as queued and then race to upgrade their locks.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
log = logging.getLogger("imagefleet.store")
# SQLSTATEs of transactions PostgreSQL aborted to resolve a conflict with another one: running
# the whole transaction again is the documented remedy, and it is safe for our transitions
# because each is one transaction computed from its inputs and the database alone.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
CONFLICT_RETRIES = 5
P = ParamSpec("P")
T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message names the URL with its password hidden."""


class SchemaNotCurrent(RuntimeError):
    """The schema is older (or newer) than this release's migrations."""


WORK_CHANNEL = "imagefleet_work"
EVENTS_CHANNEL = "imagefleet_events"  # also in migration 0015, whose trigger notifies it
# Key in a connection's info under which a write transaction collects what it must announce
# once committed (see store/events.py and `Database.commit_hooks`).
AFTER_COMMIT = "imagefleet_after_commit"
_NOTIFY_WORK = f"SELECT pg_notify('{WORK_CHANNEL}', %(payload)s)"


def safe_url(url: str) -> str:
    """The URL as it may appear in logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def normalize_url(url: str) -> str:
    """`postgresql://…` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@dataclass(frozen=True)
class WorkHint:
    """What a queued job needs (the claim's hard limits), so that a replica wakes one waiting
    claim that can run it, and which job it is, so that a replica that saw the job taken wakes
    nobody for it. Travels as the NOTIFY payload `<kind> <pixels> <vram_mb> [<job id>]` (a
    payload without the id, from an older replica, still wakes a claim)."""

    kind: str
    pixels: int
    vram_mb: int | None = None
    job_id: str | None = None

    def encode(self) -> str:
        encoded = f"{self.kind} {self.pixels} {self.vram_mb or 0}"
        return f"{encoded} {self.job_id}" if self.job_id else encoded

    @classmethod
    def decode(cls, payload: str) -> WorkHint | None:
        """None for an empty or unreadable payload: a wake-up for anything."""
        parts = payload.split()
        if len(parts) not in (3, 4) or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        job_id = parts[3] if len(parts) == 4 else None
        return cls(parts[0], int(parts[1]), int(parts[2]) or None, job_id)


def notify_work(conn: Connection, hint: WorkHint | None = None) -> None:
    """Tells every replica's waiting claims that work may have arrived (with `hint`, which
    job). On PostgreSQL this is a NOTIFY, delivered at commit (so never before the job is
    visible); SQLite has no such thing: the process that queued the job wakes its own claims
    and the others re-check on a timer."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_NOTIFY_WORK, {"payload": hint.encode() if hint else ""})


def is_conflict(exc: BaseException) -> bool:
    """Whether the database aborted this transaction to resolve a conflict (retry it)."""
    return isinstance(exc, DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def retry_conflicts(fn: Callable[P, T]) -> Callable[P, T]:
    """Runs a one-transaction operation again when the database aborted it as a deadlock or
    serialization failure, so such a conflict is never surfaced to a caller as an outage."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                if not is_conflict(exc) or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("%s: transaction conflict (%s); retrying", fn.__name__, exc.orig)
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    return wrapper


class Database:
    """An engine plus the two kinds of transaction the rest of the code needs."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        self.engine = _create_engine(self.url, self.is_sqlite, pool_size)
        # Called after a write transaction committed with what it collected under
        # AFTER_COMMIT (never for one that rolled back): wakes this process's event streams.
        self.commit_hooks: list[Callable[[list[Any]], None]] = []

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction for queries that change nothing."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that takes the write lock up front on SQLite (no lock upgrades)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(imagefleet_write=True)
            try:
                with conn.begin():
                    yield conn
            finally:
                # The info outlives this checkout (it belongs to the pooled connection).
                pending = conn.info.pop(AFTER_COMMIT, None)
        if pending:
            for hook in self.commit_hooks:
                hook(pending)

    def check(self) -> None:
        """Raises DatabaseUnavailable when a connection cannot be opened."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[-1] if exc.orig else str(exc)
            raise DatabaseUnavailable(
                f"cannot reach the database at {safe_url(self.url)}: {reason}"
            ) from exc

    def upgrade(self) -> None:
        """Brings the schema to the newest migration (idempotent)."""
        self.check()
        with self.engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def check_schema(self) -> None:
        """Raises SchemaNotCurrent unless the schema is at the newest migration: for replicas
        that leave migrating to a separate job (IMAGEFLEET_MIGRATE_ON_START=0)."""
        self.check()
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            raise SchemaNotCurrent(
                f"the database at {safe_url(self.url)} has schema revision {current or 'none'}, "
                f"this release needs {head}: run `imagefleet db upgrade` (the migrations job) "
                "first, or set IMAGEFLEET_MIGRATE_ON_START=1 to migrate at start-up"
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _create_engine(url: str, is_sqlite: bool, pool_size: int) -> Engine:
    if not is_sqlite:
        # pre_ping turns connections broken by a database restart into fresh ones instead of
        # errors; the short connect timeout makes an outage a quick 503, not a hung request.
        # The orchestrator sizes the pool to its request threads (Settings.db_pool_size), so
        # connections are opened once and kept: an overflow connection is a backend fork on
        # PostgreSQL, opened and closed again per burst. The small overflow is for callers
        # outside the request threads (start-up, tests).
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=4,
            pool_timeout=10,
            connect_args={"connect_timeout": 5},
        )
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # A file database gets a pool as large as the request threads too (SQLAlchemy's default
    # of 5 + 10 overflow would open and close connections, each re-running the PRAGMAs).
    sized = (
        {"pool_size": pool_size, "max_overflow": 4} if database and database != ":memory:" else {}
    )
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sized)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event decide how transactions start, not the sqlite3 module.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("imagefleet_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
