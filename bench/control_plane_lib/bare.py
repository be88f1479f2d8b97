"""The bare-SQL floor: the smallest honest job lifecycle on the same database, at the same
concurrency as the HTTP run, with no HTTP, no ORM and no imagefleet code.

Its own small table; 3 transactions per job: a submitter inserts a queued row, a worker takes
the oldest queued row with one conditional UPDATE (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite) and completes it with another. This is what the database itself
allows on this machine right now; imagefleet's throughput is reported as a ratio of it, which
is the headline figure (absolute numbers move with the machine's load, a same-run ratio less).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.common.report import say
from bench.control_plane_lib.stack import Bench, BenchDatabase

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL,
    params text NOT NULL,
    worker text,
    result text,
    created_at double precision NOT NULL,
    finished_at double precision
);
CREATE INDEX IF NOT EXISTS ix_bare_queued ON bare_jobs (id) WHERE status = 'queued';
"""
PG_CLAIM = (
    "UPDATE bare_jobs SET status = 'running', worker = %s WHERE id = ("
    "SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id LIMIT 1 "
    "FOR UPDATE SKIP LOCKED) RETURNING id"
)
SQLITE_SCHEMA = PG_SCHEMA.replace("bigserial PRIMARY KEY", "INTEGER PRIMARY KEY").replace(
    "double precision", "REAL"
)
SQLITE_CLAIM = (
    "UPDATE bare_jobs SET status = 'running', worker = ? WHERE id = ("
    "SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id LIMIT 1) RETURNING id"
)
PARAMS = '{"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}'


@dataclass
class BareResult:
    backend: str
    connections: int  # workers + submitters, one connection each
    lifecycles: int
    seconds: float
    errors: int
    first_error: str

    @property
    def per_second(self) -> float:
        return self.lifecycles / self.seconds if self.seconds > 0 else 0.0


class _Sql:
    """One connection's three statements, on either database."""

    def __init__(self, bench_db: BenchDatabase, sqlite_path: Path) -> None:
        self.pg = bench_db.backend == "postgresql"
        if self.pg:
            self.conn: Any = psycopg.connect(
                bench_db.url.replace("postgresql+psycopg", "postgresql"), autocommit=True
            )
        else:
            self.conn = sqlite3.connect(sqlite_path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")

    def schema(self) -> None:
        if self.pg:
            self.conn.execute(PG_SCHEMA)
        else:
            self.conn.executescript(SQLITE_SCHEMA)

    def _write(self, sql: str, args: tuple[Any, ...]) -> Any:
        if self.pg:
            return self.conn.execute(sql.replace("?", "%s"), args).fetchone()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute(sql, args).fetchone()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return row

    def submit(self) -> None:
        self._write(
            "INSERT INTO bare_jobs (status, params, created_at) VALUES ('queued', ?, ?) "
            "RETURNING id",
            (PARAMS, time.time()),
        )

    def claim(self, worker: str) -> int | None:
        row = self._write(PG_CLAIM if self.pg else SQLITE_CLAIM, (worker,))
        return int(row[0]) if row else None

    def complete(self, job_id: int) -> None:
        self._write(
            "UPDATE bare_jobs SET status = 'succeeded', result = ?, finished_at = ? "
            "WHERE id = ? AND status = 'running' RETURNING id",
            ('{"outputs": 1}', time.time(), job_id),
        )

    def close(self) -> None:
        self.conn.close()


def run_bare(bench: Bench, bench_db: BenchDatabase, jobs: int, seconds: float) -> BareResult:
    """`jobs` lifecycles (or what `seconds` allows) with as many worker and submitter threads
    as the HTTP run uses, each on its own connection."""
    args = bench.args
    workers, submitters = args.workers, args.submitters
    say(f"bare-SQL floor: {bench_db.backend}, {workers} workers + {submitters} submitters")
    sqlite_path = bench.scratch / f"bare-{bench.serial}.db"
    setup = _Sql(bench_db, sqlite_path)
    setup.schema()
    setup.close()
    lock = threading.Lock()
    counts = {"submitted": 0, "completed": 0}
    errors: list[str] = []
    stop = threading.Event()

    def guarded(body: Callable[[_Sql], None]) -> Callable[[], None]:
        def run() -> None:
            sql = _Sql(bench_db, sqlite_path)
            try:
                body(sql)
            except Exception as exc:  # reported, and the run stops
                errors.append(f"{type(exc).__name__}: {exc}")
                stop.set()
            finally:
                sql.close()

        return run

    def submitter(sql: _Sql) -> None:
        while not stop.is_set():
            with lock:
                if counts["submitted"] >= jobs:
                    return
                counts["submitted"] += 1
            sql.submit()

    def worker(name: str) -> Callable[[_Sql], None]:
        def body(sql: _Sql) -> None:
            while not stop.is_set():
                job_id = sql.claim(name)
                if job_id is None:
                    time.sleep(0.001)  # queue ran dry: the submitters are the limit
                    continue
                sql.complete(job_id)
                with lock:
                    counts["completed"] += 1
                    if counts["completed"] >= jobs:
                        stop.set()

        return body

    threads = [
        threading.Thread(target=guarded(worker(f"w{i}")), daemon=True) for i in range(workers)
    ]
    threads += [threading.Thread(target=guarded(submitter), daemon=True) for _ in range(submitters)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join(timeout=10)
    bench.threads.extend(t for t in threads if t.is_alive())
    return BareResult(
        backend=bench_db.backend,
        connections=workers + submitters,
        lifecycles=counts["completed"],
        seconds=elapsed,
        errors=len(errors),
        first_error=errors[0][:200] if errors else "",
    )
