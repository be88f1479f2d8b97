"""The chaos run's fleet: the shared harness's orchestrator and workers (tests/harness/), on
one fixed port so that restarts keep the URL, plus the database and the ways to break them.
Every method that starts a process is called from the harness's main thread."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.chaos_lib.config import (
    REPO_ROOT,
    STARTUP_TIMEOUT,
    STOP_GRACE_SECONDS,
    ChaosConfig,
    Restart,
    SetupError,
)
from tests.harness.fleet import Fleet, WorkerProcess, create_demo_model, create_key
from tests.harness.orchestrator import OrchestratorProcess, OrchestratorUnavailable
from tests.harness.ports import free_port
from tests.harness.processes import CommandFailed, child_env, python_path
from tests.tcp_proxy import TcpProxy


class ChaosFleet(Fleet):
    """Processes run in sessions of their own (a terminal's Ctrl-C reaches only the harness,
    which then stops them in order); logs go to `<scratch>/logs`, data to `<scratch>/data`."""

    def __init__(self, config: ChaosConfig, scratch: Path, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.data_dir = scratch / "data"
        logs = scratch / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker_args = ["--engine", config.engine]
        if config.engine == "diffusers":
            worker_args += ["--device", "cpu"]
        super().__init__(
            logs,
            OrchestratorProcess(logs, port=free_port(), own_session=True),
            worker_key="",  # made by prepare()
            node_prefix="chaos-node",
            # One cache for all, as on a real multi-GPU machine: it is built for sharing.
            cache_dir=self.data_dir / "worker-cache",
            worker_args=worker_args,
            worker_env={
                # The sleep engine is imported from the repository's tests/.
                "PYTHONPATH": python_path(REPO_ROOT),
                "IMAGEFLEET_CHAOS_SLEEP_MIN": str(config.sleep_min),
                "IMAGEFLEET_CHAOS_SLEEP_MAX": str(config.sleep_max),
            },
            own_session=True,
        )
        self.audit_url = f"sqlite:///{(self.data_dir / 'imagefleet.db').resolve()}"
        self.orchestrator_url = ""  # the database URL the orchestrator uses (SQLite: default)
        self.pg_database: str | None = None
        self.proxy: TcpProxy | None = None  # on PostgreSQL in proxy mode
        self.client_key = ""
        self.killed_nodes: set[str] = set()
        self.unexpected_exits: list[str] = []

    # --- set-up ---

    def prepare(self) -> None:
        """The database (a fresh one on PostgreSQL), the demo model and two keys, made with
        the CLI as an operator would."""
        env = child_env()
        if self.config.backend == "postgresql":
            self._create_pg_database()
            env["IMAGEFLEET_DATABASE_URL"] = self.audit_url
        try:
            create_demo_model(self.data_dir, env)
            self.client_key, self.worker_key = (
                create_key(self.data_dir, f"chaos-{scope}", scope, env)
                for scope in ("client", "worker")
            )
        except CommandFailed as exc:
            raise SetupError(str(exc)) from exc

    def _create_pg_database(self) -> None:
        import psycopg

        name = f"imagefleet_chaos_{secrets.token_hex(4)}"
        admin_url = self.config.pg_admin_url
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f"CREATE DATABASE {name}")
        except psycopg.OperationalError as exc:
            raise SetupError(f"no PostgreSQL at {admin_url}: {exc}") from exc
        self.pg_database = name
        direct = make_url(admin_url).set(database=name)
        self.audit_url = direct.render_as_string(hide_password=False)
        self.orchestrator_url = self.audit_url
        if self.config.pg_outage == "proxy":
            self.proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
            self.proxy.start()
            proxied = direct.set(host="127.0.0.1", port=self.proxy.port)
            self.orchestrator_url = proxied.render_as_string(hide_password=False)

    def pg_deadlocks(self) -> int | None:
        """PostgreSQL's deadlock count for the run's database; None on SQLite."""
        if self.pg_database is None:
            return None
        from tests.harness.races import pg_deadlocks

        return pg_deadlocks(self.audit_url)

    def drop_pg_database(self) -> None:
        if self.pg_database is None:
            return
        import psycopg

        with psycopg.connect(self.config.pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.pg_database} WITH (FORCE)")
        self.pg_database = None

    # --- the orchestrator ---

    def orchestrator_env(self) -> dict[str, str]:
        settings = {
            "IMAGEFLEET_DATA_DIR": str(self.data_dir),
            "IMAGEFLEET_LEASE_SECONDS": str(self.config.lease_seconds),
            "IMAGEFLEET_REAPER_INTERVAL_SECONDS": "0.5",
            "IMAGEFLEET_RATE_LIMIT_PER_SECOND": "0",
            "IMAGEFLEET_MAX_ATTEMPTS": str(self.config.max_attempts),
        }
        if self.orchestrator_url:
            settings["IMAGEFLEET_DATABASE_URL"] = self.orchestrator_url
        return child_env(**settings)

    def start_orchestrator(self) -> None:
        """`imagefleet serve` on the fleet's one port, waiting for /healthz (a port still held
        for a moment after a kill is retried)."""
        self.orchestrator.env = self.orchestrator_env()
        try:
            self.orchestrator.start(STARTUP_TIMEOUT)
        except OrchestratorUnavailable as exc:
            raise SetupError(str(exc)) from exc

    def restart_orchestrator(self, sig: signal.Signals) -> Restart:
        started = time.monotonic()
        note = ""
        if sig is signal.SIGKILL:
            self.orchestrator.kill()
        elif not self.orchestrator.stop(STOP_GRACE_SECONDS):
            note = f"SIGTERM took over {STOP_GRACE_SECONDS:.0f} s; killed"
        stopped = time.monotonic()
        self.start_orchestrator()
        return Restart(sig.name, stopped - started, time.monotonic() - stopped, note)

    def check_orchestrator(self) -> None:
        """An orchestrator that died on its own is a finding; it is started again so that the
        run can still tell whether jobs survive it."""
        process = self.orchestrator.process
        if process is not None and not process.running:
            code = process.returncode
            self.unexpected_exits.append(f"{process.name} exited with {code}")
            self.say(f"!! the orchestrator exited on its own with {code}; starting it again")
            self.start_orchestrator()

    # --- workers ---

    def start_chaos_workers(self, count: int) -> None:
        """Starts `count` workers at once and waits until each claims."""
        try:
            self.start_workers(count, timeout=STARTUP_TIMEOUT * max(1, count / 4))
        except (RuntimeError, TimeoutError) as exc:
            raise SetupError(str(exc)) from exc

    def kill_worker(self, rng: random.Random) -> WorkerProcess | None:
        """SIGKILLs one random worker that has started claiming, and starts its replacement.

        The last claiming worker is spared (the kill waits for a replacement to come up): a
        replacement takes many seconds to import torch, and killing whatever comes up next
        would burn one job's attempts on an empty fleet, which says nothing about the
        orchestrator."""
        candidates = self.ready_workers()
        if len(candidates) < 2:
            return None
        victim = rng.choice(candidates)
        self.retire(victim)
        self.killed_nodes.add(victim.node_id)
        self.spawn_worker()
        return victim

    def replace_exited_workers(self) -> None:
        """A worker that exited by itself is a finding; it is replaced to keep the pool full."""
        for worker in [w for w in self.workers if not w.running]:
            code = worker.returncode
            self.unexpected_exits.append(f"{worker.name} exited with {code}")
            self.say(f"!! {worker.name} exited on its own with {code}; replacing it")
            self.retire(worker)
            self.spawn_worker()

    # --- the database ---

    def cut_database(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()

    def restore_database(self) -> None:
        assert self.proxy is not None
        self.proxy.start()

    def restart_database_server(self) -> float:
        """Restarts the real PostgreSQL cluster; the seconds it took."""
        versions = sorted(os.listdir("/etc/postgresql"), key=_version_key)
        started = time.monotonic()
        done = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"pg_ctlcluster restart failed: {done.stdout}{done.stderr}")
        return time.monotonic() - started

    # --- the end ---

    def stop_processes(self) -> None:
        """Workers first, all signalled at once (each hands back what it runs), then the
        orchestrator; SIGKILL for stragglers. Safe to call more than once."""
        self.stop(STOP_GRACE_SECONDS)
        if self.proxy is not None:
            self.proxy.cut()

    def worker_logs(self) -> list[Path]:
        return [w.log_path for w in self.all_workers()]

    def orchestrator_logs(self) -> list[Path]:
        return list(self.orchestrator.log_paths)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))
