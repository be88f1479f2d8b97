"""What a run needs and undoes: migrated databases with keys and the demo model, orchestrator
processes on them (from the shared harness, tests/harness/), threads and scratch files."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common.report import say
from bench.control_plane_lib.counting import COUNTING_HOOK
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key
from imagefleet.store.models import register_model
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import python_path

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Control plane"
# Server settings for every run: no per-key rate limit (it would answer 429 to the submitters)
# and a lease long enough that nothing is ever reaped in the middle of a measurement.
SERVER_ENV = {
    "IMAGEFLEET_RATE_LIMIT_PER_SECOND": "0",
    "IMAGEFLEET_LEASE_SECONDS": "300",
}


@dataclass
class BenchDatabase:
    """A migrated database with a client key, a worker key and the `demo` model."""

    backend: str
    url: str
    client: ApiKey
    client_token: str
    worker: ApiKey
    worker_token: str
    pg_name: str | None  # PostgreSQL: the database's name


class Bench:
    """Owns everything a run starts; `close()` (always called) undoes all of it in reverse."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = contextlib.ExitStack()
        # Threads still running after their run; joined last, once the servers they talk to
        # are gone (their requests then fail at once and they end).
        self.threads: list[threading.Thread] = []
        self.stack.callback(self._reap_threads)
        self.scratch = Path(tempfile.mkdtemp(prefix="imagefleet-bench-"))
        self.stack.callback(shutil.rmtree, self.scratch, ignore_errors=True)
        self.hook_dir = self.scratch / "hook"
        self.hook_dir.mkdir()
        (self.hook_dir / "sitecustomize.py").write_text(COUNTING_HOOK)
        self.serial = 0
        self.profile_summary: list[str] = []

    def close(self) -> None:
        self.stack.close()

    def _reap_threads(self) -> None:
        until = time.monotonic() + 30
        for thread in self.threads:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            say(f"threads still running at exit (daemons, they die with us): {stuck}")

    def fresh(self, backend: str) -> BenchDatabase:
        """An empty, migrated database of this kind, dropped again at the end."""
        self.serial += 1
        name: str | None = None
        if backend == "sqlite":
            url = f"sqlite:///{self.scratch / f'db-{self.serial}' / 'imagefleet.db'}"
        else:
            name = f"imagefleet_bench_{secrets.token_hex(4)}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            self.stack.callback(self._drop, name)
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        db = Database(url)
        try:
            db.upgrade()
            with db.write() as conn:
                client, client_token = create_key(
                    conn, name="bench-client", scope="client", tier="free", now=time.time()
                )
                worker, worker_token = create_key(
                    conn, name="bench-worker", scope="worker", tier="free", now=time.time()
                )
                register_model(
                    conn,
                    name="demo",
                    kind="checkpoint",
                    source="/models/demo",
                    sha256="d" * 64,
                    size_bytes=1,
                    now=time.time(),
                )
        finally:
            db.dispose()
        return BenchDatabase(backend, url, client, client_token, worker, worker_token, name)

    @staticmethod
    def _drop(name: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def serve(
        self, bench_db: BenchDatabase, replicas: int, env: dict[str, str] | None = None
    ) -> tuple[list[OrchestratorProcess], Path]:
        """`replicas` orchestrator processes on the same database (for SQLite: the same file,
        which is allowed; SQLite is the single-machine default). Returns them and the folder
        their SQL counters are written to."""
        self.serial += 1
        counts = self.scratch / f"counts-{self.serial}"
        counts.mkdir()
        data_dir = self.scratch / f"server-{self.serial}"  # shared: one artifact folder
        full_env = {
            **os.environ,
            "IMAGEFLEET_DATA_DIR": str(data_dir),
            **SERVER_ENV,
            "IMAGEFLEET_DATABASE_URL": bench_db.url,
            "IMAGEFLEET_BENCH_COUNTS": str(counts),
            "PYTHONPATH": python_path(self.hook_dir),
            **(env or {}),
        }
        servers = []
        for replica in range(replicas):
            server = OrchestratorProcess(data_dir, env=full_env, name=f"orchestrator-{replica}")
            # Long polls would hold a graceful stop for their whole wait: 3 s is enough.
            self.stack.callback(server.stop, 3.0)
            servers.append(server.start())
        time.sleep(0.5)  # the counters' first write
        return servers, counts

    @staticmethod
    def stop(servers: list[OrchestratorProcess]) -> None:
        """Stops servers early (their clean-up callbacks then do nothing)."""
        for server in servers:
            server.stop(3.0)
