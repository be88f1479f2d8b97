"""Chaos run: many jobs through a real fleet while it is being broken, then an audit.

The fleet is real: one `imagefleet serve` process and `imagefleet worker` processes on this
machine, talking HTTP. Jobs are submitted through the client API, each with its own
Idempotency-Key, and every submit is retried on connection errors and 5xx answers, as a careful
client would; the key makes a retry after a lost answer return the first job instead of
queueing a second one. While the workers run them:

- a random worker gets SIGKILL every --kill-every seconds on average (exponential gaps, so kills
  bunch up now and then) and a replacement is started at once: the pool stays at --workers;
- the orchestrator is restarted --orchestrator-restarts times on the same port and data: the
  first time (when there are two or more) with SIGKILL in the middle of the submits, the others
  with SIGTERM/SIGKILL in turn while the workers are busy;
- on PostgreSQL the database goes away once: by default the orchestrator reaches it through a
  TCP forwarder (tests/tcp_proxy.py) that is cut for --pg-outage-seconds, which drops every
  connection and refuses new ones like a server restart does, without restarting the server
  other test runs share; `--pg-outage restart` restarts the real server with pg_ctlcluster.

Leases are short (3 s, reaped every 0.5 s) so that every kill costs a requeue within seconds, and
max_attempts is 10 so that chaos alone never fails a job. Workers run the sleep engine
(tests/chaos_engine.py: a random 0.2-1.0 s per job, real PNGs) unless `--engine diffusers`
asks for the real pipeline on the demo model.

When every job is final, everything is stopped and the database is audited. The invariants:
every submit was acknowledged and made exactly one job; every acknowledged job succeeded
(none lost); each has exactly one attempt with outcome `succeeded` (the job's result attempt)
and exactly one accepted set of artifacts, all from that attempt, whose files exist with the
recorded sha256 and decode as PNGs of the requested size; no attempt is left running, and the
job's attempt counter matches its attempt rows.

    .venv/bin/python bench/chaos.py                       # SQLite, 1,000 jobs, 8 workers
    .venv/bin/python bench/chaos.py --backend postgresql  # server: --pg-admin-url
    .venv/bin/python bench/chaos.py --engine diffusers --jobs 50

Exit status: 0 when every invariant holds, 1 when one is broken, 2 when the run could not be
set up, 130 on Ctrl-C. Everything started here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import math
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from imagefleet.store.database import Database
from imagefleet.store.tables import artifacts, attempts, jobs, nodes

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_FILE = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_SECTION = "## Chaos"
SLEEP_ENGINE = "tests.chaos_engine:SleepEngine"
READY_LINE = "pulling from"  # a worker logs it right before its first claim
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# When the database outage happens on PostgreSQL, as a fraction of jobs succeeded: away from the
# orchestrator restarts (which land at 1/R, 2/R, ... of the run).
DB_OUTAGE_AT = 0.3
STOP_GRACE_SECONDS = 15.0
STARTUP_TIMEOUT = 120.0
# Worker log lines that mean an attempt was abandoned because its lease was gone (409 answers).
DROPPED_MARKERS = ("lease lost, result dropped", "stopped (lease lost")
SERVER_ERROR = re.compile(r'HTTP/1\.[01]" 5\d\d')


class SetupError(RuntimeError):
    """The fleet could not be started; nothing about the invariants is known."""


@dataclass
class ChaosConfig:
    """Everything a run depends on; the defaults are the issue's full run."""

    jobs: int = 1000
    workers: int = 8
    kill_every: float = 10.0  # mean seconds between worker SIGKILLs; 0 disables them
    orchestrator_restarts: int = 2
    backend: str = "sqlite"  # or "postgresql"
    engine: str = SLEEP_ENGINE
    timeout: float = 1800.0  # seconds from the first submit until every job must be final
    seed: int | None = None  # for the chaos schedule (which worker, when); None: random
    sleep_min: float = 0.2
    sleep_max: float = 1.0
    size: int = 64
    steps: int = 4
    lease_seconds: float = 3.0
    max_attempts: int = 10
    pg_outage: str = "proxy"  # or "restart"
    pg_outage_seconds: float = 5.0
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    scratch: Path | None = None  # logs and data; default a temporary folder
    keep: bool = False  # keep the scratch folder (and the PostgreSQL database) afterwards

    @property
    def restart_signals(self) -> list[signal.Signals]:
        """SIGKILL first (it lands among the submits, where an answer lost with the process
        tests the Idempotency-Key), then alternating."""
        cycle = itertools.cycle((signal.SIGKILL, signal.SIGTERM))
        return [next(cycle) for _ in range(self.orchestrator_restarts)]

    def restart_triggers(self) -> list[tuple[str, float]]:
        """When each orchestrator restart happens: ("submitted" | "succeeded", fraction)."""
        count = self.orchestrator_restarts
        if count <= 1:
            return [("succeeded", 0.5)] * count
        return [("submitted", 0.5)] + [("succeeded", k / count) for k in range(1, count)]

    @property
    def variant(self) -> str:
        """The docs subsection this run's figures go to."""
        backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[self.backend]
        engine = "sleep engine" if self.engine == SLEEP_ENGINE else f"{self.engine} engine"
        if self.engine == "diffusers":
            engine = "diffusers engine on the demo model"
        return f"{backend}, {engine}"


@dataclass
class Restart:
    signal: str
    stop_seconds: float  # from the signal until the process was gone
    start_seconds: float  # from then until /healthz answered again
    note: str = ""

    @property
    def downtime(self) -> float:
        return self.stop_seconds + self.start_seconds


@dataclass
class ChaosReport:
    """The figures of one run and the invariants it broke (none, hopefully)."""

    config: ChaosConfig
    acknowledged: int = 0
    created: int = 0  # 201 answers
    replayed: int = 0  # 200 answers: a retried submit whose first try had gone through
    submit_retries: int = 0
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0  # jobs with more than one succeeded attempt or accepted artifact set
    lost: int = 0  # acknowledged, but not succeeded at the end
    attempts_histogram: dict[int, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    kill_interrupted: int = 0  # attempts that ended lease_expired on a killed worker's node
    restarts: list[Restart] = field(default_factory=list)
    db_outages: list[str] = field(default_factory=list)
    dropped_by_workers: int = 0
    server_errors: int = 0
    quarantined_nodes: int = 0
    worker_starts: list[float] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    timed_out: bool = False
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)  # of the machine, at the start
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs, for the terminal and the docs alike."""
        n = self.config.jobs
        histogram = ", ".join(f"{k}: {v}" for k, v in sorted(self.attempts_histogram.items()))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        restarts = "; ".join(
            f"{r.signal}, down {r.downtime:.1f} s (stop {r.stop_seconds:.1f} s, start "
            f"{r.start_seconds:.1f} s{', ' + r.note if r.note else ''})"
            for r in self.restarts
        )
        starts = self.worker_starts
        start_text = (
            f"mean {statistics.fmean(starts):.1f} s, max {max(starts):.1f} s ({len(starts)})"
            if starts
            else "-"
        )
        rate = self.succeeded / self.wall_seconds if self.wall_seconds else 0.0
        return [
            ("jobs submitted and acknowledged", f"{self.acknowledged} / {n}"),
            (
                "submit retries (answers replayed by Idempotency-Key)",
                f"{self.submit_retries} ({self.replayed})",
            ),
            ("succeeded (must be N)", f"{self.succeeded}"),
            ("accepted duplicates (must be 0)", f"{self.duplicates}"),
            ("lost (must be 0)", f"{self.lost}"),
            ("failed", f"{self.failed}"),
            ("attempts per job: jobs", histogram or "-"),
            ("attempt outcomes", outcomes or "-"),
            (
                "worker SIGKILLs (attempts they interrupted)",
                f"{self.kills} ({self.kill_interrupted})",
            ),
            (
                "orchestrator restarts",
                f"{len(self.restarts)}{': ' + restarts if restarts else ''}",
            ),
            ("database outages", "; ".join(self.db_outages) or "-"),
            ("attempts dropped by workers after a 409 (lease lost)", f"{self.dropped_by_workers}"),
            ("orchestrator 5xx answers", f"{self.server_errors}"),
            ("nodes quarantined", f"{self.quarantined_nodes}"),
            ("worker start, spawn to first claim", start_text),
            ("unexpected process exits", f"{len(self.unexpected_exits)}"),
            ("wall time, first submit to last job final", f"{self.wall_seconds:.1f} s"),
            ("throughput under chaos", f"{rate:.2f} jobs/s"),
        ]

    def table(self) -> str:
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        return "\n".join(lines)


# --- child processes ---------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus stray IMAGEFLEET_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEFLEET_")}
    return {**env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Child:
    """A process started here, in its own session (a terminal's Ctrl-C reaches only the
    harness, which then stops its children in order), its output appended to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.spawned = time.monotonic()
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, sig: signal.Signals) -> None:
        """Signals the child's own process group (it leads it), never anything else."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.popen.wait()
        self._log.close()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """SIGTERM, then SIGKILL after `grace` seconds; True when SIGTERM was enough."""
        self.send(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
            graceful = True
        except subprocess.TimeoutExpired:
            graceful = False
        self.kill()
        return graceful


class WorkerChild(Child):
    def __init__(self, number: int, args: list[str], env: dict[str, str], logs: Path) -> None:
        super().__init__(f"worker-{number}", args, env, logs / f"worker-{number}.log")
        self.node_id = f"chaos-node-{number}"
        self.ready_after: float | None = None  # seconds from spawn to the first claim

    def check_ready(self) -> bool:
        if self.ready_after is None and READY_LINE in self.log_text():
            self.ready_after = time.monotonic() - self.spawned
        return self.ready_after is not None


def cli(env: dict[str, str], *args: str) -> str:
    """One `python -m imagefleet` command run to its end; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "imagefleet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode:
        raise SetupError(f"imagefleet {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# --- the fleet ---------------------------------------------------------------------------------


class Fleet:
    """The orchestrator, the workers and (on PostgreSQL) the database, with the ways to break
    them. Every method that starts a process is called from the harness's main thread."""

    def __init__(self, config: ChaosConfig, scratch: Path, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.data_dir = scratch / "data"
        self.logs = scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.audit_url = f"sqlite:///{(self.data_dir / 'imagefleet.db').resolve()}"
        self.orchestrator_url = ""  # the database URL the orchestrator uses (SQLite: default)
        self.pg_database: str | None = None
        self.proxy: Any = None  # tests.tcp_proxy.TcpProxy on PostgreSQL in proxy mode
        self.client_key = ""
        self.worker_key = ""
        self.orchestrator: Child | None = None
        self.orchestrator_runs = 0
        self.orchestrator_logs: list[Path] = []
        self.workers: list[WorkerChild] = []
        self.gone: list[WorkerChild] = []  # killed or exited
        self.killed_nodes: set[str] = set()
        self.unexpected_exits: list[str] = []
        self._numbers = itertools.count()

    # --- set-up ---

    def prepare(self) -> None:
        """The database (a fresh one on PostgreSQL), the demo model and two keys, made with
        the CLI as an operator would."""
        env = child_env()
        if self.config.backend == "postgresql":
            self._create_pg_database()
            env["IMAGEFLEET_DATABASE_URL"] = self.audit_url
        data = ("--data-dir", str(self.data_dir))
        cli(env, "models", "create-demo", *data)
        tokens = [
            cli(env, "keys", "create", "--name", f"chaos-{scope}", "--scope", scope, *data)
            .strip()
            .splitlines()[-1]  # the token is printed alone on the last line
            for scope in ("client", "worker")
        ]
        self.client_key, self.worker_key = tokens

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
            _repo_on_path()
            from tests.tcp_proxy import TcpProxy

            self.proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
            self.proxy.start()
            proxied = direct.set(host="127.0.0.1", port=self.proxy.port)
            self.orchestrator_url = proxied.render_as_string(hide_password=False)

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
        """`imagefleet serve` on the fleet's one port, waiting for /healthz. The port may still
        be held for a moment after a kill, so a bind failure is retried."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            run = self.orchestrator_runs
            self.orchestrator_runs += 1
            log_path = self.logs / f"orchestrator-{run}.log"
            self.orchestrator_logs.append(log_path)
            child = Child(
                f"orchestrator-{run}",
                [
                    *(sys.executable, "-m", "imagefleet", "serve"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                ],
                self.orchestrator_env(),
                log_path,
            )
            self.orchestrator = child
            while child.running and time.monotonic() < deadline:
                if _healthy(self.url):
                    return
                time.sleep(0.05)
            child.stop()
            in_use = "address already in use" in child.log_text().lower()
            if not in_use or time.monotonic() >= deadline:
                raise SetupError(f"the orchestrator did not start:\n{child.log_text()[-4000:]}")
            time.sleep(0.5)

    def restart_orchestrator(self, sig: signal.Signals) -> Restart:
        assert self.orchestrator is not None
        started = time.monotonic()
        note = ""
        if sig is signal.SIGKILL:
            self.orchestrator.kill()
        elif not self.orchestrator.stop():
            note = f"SIGTERM took over {STOP_GRACE_SECONDS:.0f} s; killed"
        stopped = time.monotonic()
        self.start_orchestrator()
        return Restart(sig.name, stopped - started, time.monotonic() - stopped, note)

    def check_orchestrator(self) -> None:
        """An orchestrator that died on its own is a finding; it is started again so that the
        run can still tell whether jobs survive it."""
        if self.orchestrator is not None and not self.orchestrator.running:
            code = self.orchestrator.popen.returncode
            self.unexpected_exits.append(f"{self.orchestrator.name} exited with {code}")
            self.say(f"!! the orchestrator exited on its own with {code}; starting it again")
            self.start_orchestrator()

    # --- workers ---

    def spawn_worker(self) -> WorkerChild:
        number = next(self._numbers)
        args = [
            *(sys.executable, "-m", "imagefleet", "worker"),
            *("--orchestrator", self.url, "--key", self.worker_key),
            # One cache for all, as on a real multi-GPU machine: it is built for sharing.
            *("--cache-dir", str(self.data_dir / "worker-cache")),
            *("--node-id", f"chaos-node-{number}", "--claim-wait", "2"),
            *("--engine", self.config.engine),
        ]
        if self.config.engine == "diffusers":
            args += ["--device", "cpu"]
        python_path = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env = child_env(
            PYTHONPATH=python_path,
            # One torch thread each: many workers share few cores.
            OMP_NUM_THREADS="1",
            IMAGEFLEET_CHAOS_SLEEP_MIN=str(self.config.sleep_min),
            IMAGEFLEET_CHAOS_SLEEP_MAX=str(self.config.sleep_max),
        )
        worker = WorkerChild(number, args, env, self.logs)
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int) -> None:
        """Starts `count` workers at once (their imports overlap) and waits until each claims."""
        started = [self.spawn_worker() for _ in range(count)]
        deadline = time.monotonic() + STARTUP_TIMEOUT * max(1, count / 4)
        while not all(worker.check_ready() for worker in started):
            for worker in started:
                if not worker.running:
                    raise SetupError(
                        f"{worker.name} exited with {worker.popen.returncode} before its first "
                        f"claim:\n{worker.log_text()[-4000:]}"
                    )
            if time.monotonic() > deadline:
                raise SetupError("the workers did not start in time")
            time.sleep(0.2)

    def ready_workers(self) -> list[WorkerChild]:
        return [w for w in self.workers if w.running and w.check_ready()]

    def kill_worker(self, rng: random.Random) -> WorkerChild | None:
        """SIGKILLs one random worker that has started claiming, and starts its replacement.

        The last claiming worker is spared (the kill waits for a replacement to come up): a
        replacement takes many seconds to import torch, and killing whatever comes up next
        would burn one job's attempts on an empty fleet, which says nothing about the
        orchestrator."""
        candidates = self.ready_workers()
        if len(candidates) < 2:
            return None
        victim = rng.choice(candidates)
        victim.kill()
        self.workers.remove(victim)
        self.gone.append(victim)
        self.killed_nodes.add(victim.node_id)
        self.spawn_worker()
        return victim

    def replace_exited_workers(self) -> None:
        """A worker that exited by itself is a finding; it is replaced to keep the pool full."""
        for worker in [w for w in self.workers if not w.running]:
            code = worker.popen.returncode
            self.unexpected_exits.append(f"{worker.name} exited with {code}")
            self.say(f"!! {worker.name} exited on its own with {code}; replacing it")
            worker.kill()
            self.workers.remove(worker)
            self.gone.append(worker)
            self.spawn_worker()

    # --- the database ---

    def cut_database(self) -> None:
        self.proxy.cut()

    def restore_database(self) -> None:
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
        for worker in self.workers:
            worker.send(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        self.gone += self.workers
        self.workers = []
        if self.orchestrator is not None:
            self.orchestrator.stop()
        if self.proxy is not None:
            self.proxy.cut()

    def all_worker_logs(self) -> list[Path]:
        return [w.log_path for w in (*self.gone, *self.workers)]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _repo_on_path() -> None:
    """tests/ helpers are imported from the repository, which is not an installed package."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


# --- the client side ---------------------------------------------------------------------------


class Submitter(threading.Thread):
    """Submits the jobs one after another, each under its own Idempotency-Key, retrying every
    submit until it is answered 201 or 200 (or refused for good, which is a violation)."""

    def __init__(self, url: str, key: str, config: ChaosConfig) -> None:
        super().__init__(name="submitter", daemon=True)
        self.url = url
        self.key = key
        self.config = config
        self.tag = f"chaos-{secrets.token_hex(4)}"
        self.job_ids: list[str | None] = [None] * config.jobs
        self.acknowledged = 0
        self.created = 0
        self.replayed = 0
        self.retries = 0
        self.refused: list[str] = []
        self.halt = threading.Event()

    def body(self, index: int) -> dict[str, Any]:
        return {
            "kind": "txt2img",
            "params": {
                "prompt": f"chaos job {index}",
                "model": "demo",
                "width": self.config.size,
                "height": self.config.size,
                "steps": self.config.steps,
                "seed": index,
            },
        }

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10.0) as http:
            for index in range(self.config.jobs):
                if self.halt.is_set():
                    return
                self._submit(http, index)

    def _submit(self, http: httpx.Client, index: int) -> None:
        headers = {"Idempotency-Key": f"{self.tag}-{index}"}
        delay = 0.1
        while not self.halt.is_set():
            wait = delay
            try:
                response = http.post("/v1/jobs", json=self.body(index), headers=headers)
            except httpx.TransportError:
                pass
            else:
                if response.status_code in (200, 201):
                    self.job_ids[index] = response.json()["id"]
                    self.acknowledged += 1
                    if response.status_code == 201:
                        self.created += 1
                    else:
                        self.replayed += 1
                    return
                if response.status_code != 429 and response.status_code < 500:
                    self.refused.append(
                        f"submit {index} refused: HTTP {response.status_code} {response.text[:300]}"
                    )
                    return
                with contextlib.suppress(ValueError):
                    wait = max(wait, float(response.headers.get("Retry-After", 0)))
            self.retries += 1
            self.halt.wait(wait)
            delay = min(delay * 2, 2.0)


class StatusCounts:
    """Jobs per status, read from the database (not the API, which the chaos keeps taking
    down). A failed read keeps the last answer: the database may be the thing that is down."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.last: dict[str, int] = {}

    def read(self) -> dict[str, int]:
        try:
            with self.db.read() as conn:
                rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
                self.last = {status: int(count) for status, count in rows}
        except Exception:  # an outage on PostgreSQL; try again next tick
            pass
        return self.last

    def close(self) -> None:
        self.db.dispose()


# --- the run -----------------------------------------------------------------------------------


def run_chaos(config: ChaosConfig, say: Callable[[str], None] = print) -> ChaosReport:
    """Starts a fleet, submits config.jobs jobs while breaking it, audits the database.

    Raises SetupError when the fleet cannot be started. Whatever it started is stopped before
    it returns or raises; the scratch folder is kept when asked, or when something failed.
    """
    scratch = config.scratch or Path(tempfile.mkdtemp(prefix="imagefleet-chaos-"))
    scratch.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(config)
    report.load_average = os.getloadavg()
    fleet = Fleet(config, scratch, say)
    keep = config.keep
    try:
        began = time.monotonic()
        say(f"preparing {config.backend} fleet in {scratch} ...")
        fleet.prepare()
        fleet.start_orchestrator()
        say(f"orchestrator at {fleet.url}; starting {config.workers} workers ...")
        fleet.start_workers(config.workers)
        report.setup_seconds = time.monotonic() - began
        say(f"fleet up after {report.setup_seconds:.1f} s; submitting {config.jobs} jobs")
        submitter = Submitter(fleet.url, fleet.client_key, config)
        _drive(config, fleet, submitter, report, say)
        fleet.stop_processes()
        report.acknowledged = submitter.acknowledged
        report.created = submitter.created
        report.replayed = submitter.replayed
        report.submit_retries = submitter.retries
        report.violations += submitter.refused
        audit(report, fleet, submitter.job_ids)
        keep = keep or not report.ok
        return report
    except BaseException:
        keep = True
        raise
    finally:
        fleet.stop_processes()
        if not config.keep:  # the logs may be kept below, but no database on a shared server
            fleet.drop_pg_database()
        if keep:
            say(f"logs and data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _drive(
    config: ChaosConfig,
    fleet: Fleet,
    submitter: Submitter,
    report: ChaosReport,
    say: Callable[[str], None],
) -> None:
    """The chaos loop: until every job in the database is final and every submit answered."""
    rng = random.Random(config.seed)
    counts = StatusCounts(fleet.audit_url)
    triggers = list(zip(config.restart_triggers(), config.restart_signals, strict=True))
    outage_pending = config.backend == "postgresql"
    outage_end: float | None = None
    outage_started = 0.0

    def next_gap() -> float:
        return rng.expovariate(1.0 / config.kill_every) if config.kill_every > 0 else math.inf

    start = time.monotonic()
    next_kill = start + next_gap()
    next_line = start
    submitter.start()
    try:
        while True:
            now = time.monotonic()
            status = counts.read()
            total = sum(status.values())
            final = sum(status.get(s, 0) for s in FINAL_STATUSES)
            succeeded = status.get("succeeded", 0)
            if not submitter.is_alive() and total == final and total >= submitter.acknowledged:
                break
            if now - start > config.timeout:
                report.timed_out = True
                report.violations.append(
                    f"timed out after {config.timeout:.0f} s with {total - final} jobs not final"
                )
                break
            fleet.check_orchestrator()
            fleet.replace_exited_workers()
            if now >= next_kill and fleet.kill_worker(rng) is not None:
                report.kills += 1
                next_kill = now + next_gap()
            if triggers:
                (what, fraction), sig = triggers[0]
                reached = submitter.acknowledged if what == "submitted" else succeeded
                if reached >= fraction * config.jobs:
                    triggers.pop(0)
                    say(f"{now - start:6.1f}s  restarting the orchestrator with {sig.name}")
                    restart = fleet.restart_orchestrator(sig)
                    report.restarts.append(restart)
                    say(f"{time.monotonic() - start:6.1f}s  back after {restart.downtime:.1f} s")
            if outage_pending and succeeded >= DB_OUTAGE_AT * config.jobs:
                outage_pending = False
                if config.pg_outage == "proxy":
                    say(f"{now - start:6.1f}s  cutting the database connection")
                    fleet.cut_database()
                    outage_started = now
                    outage_end = now + config.pg_outage_seconds
                else:
                    say(f"{now - start:6.1f}s  restarting the PostgreSQL server")
                    took = fleet.restart_database_server()
                    report.db_outages.append(f"pg_ctlcluster restart, {took:.1f} s")
            if outage_end is not None and now >= outage_end:
                fleet.restore_database()
                report.db_outages.append(f"proxy cut for {now - outage_started:.1f} s")
                outage_end = None
                say(f"{now - start:6.1f}s  database connection restored")
            if now >= next_line:
                next_line = now + 5.0
                say(
                    f"{now - start:6.1f}s  acknowledged {submitter.acknowledged}/{config.jobs}  "
                    f"succeeded {succeeded}  running {status.get('running', 0)}  "
                    f"queued {status.get('queued', 0)}  kills {report.kills}  "
                    f"restarts {len(report.restarts)}  workers ready "
                    f"{len(fleet.ready_workers())}/{config.workers}"
                )
            time.sleep(0.25)
    finally:
        submitter.halt.set()
        submitter.join(timeout=15)
        if outage_end is not None:
            fleet.restore_database()
        counts.close()
    report.wall_seconds = time.monotonic() - start


# --- the audit ---------------------------------------------------------------------------------


def audit(report: ChaosReport, fleet: Fleet, acknowledged: Sequence[str | None]) -> None:
    """Reads the whole database once everything has stopped and checks every invariant."""
    config = report.config
    violations = report.violations
    db = Database(fleet.audit_url)
    try:
        with db.read() as conn:
            job_rows = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.status,
                    jobs.c.result_attempt_id,
                    jobs.c.attempts,
                    jobs.c.params,
                )
            ).all()
            attempt_rows = conn.execute(
                select(
                    attempts.c.id,
                    attempts.c.job_id,
                    attempts.c.outcome,
                    attempts.c.node_id,
                    attempts.c.started_at,
                )
            ).all()
            artifact_rows = conn.execute(
                select(
                    artifacts.c.key,
                    artifacts.c.job_id,
                    artifacts.c.attempt_id,
                    artifacts.c.idx,
                    artifacts.c.sha256,
                    artifacts.c.accepted,
                )
            ).all()
            report.quarantined_nodes = conn.execute(
                select(func.count()).select_from(nodes).where(nodes.c.quarantined_at.is_not(None))
            ).scalar_one()
    finally:
        db.dispose()

    missing = [i for i, job_id in enumerate(acknowledged) if job_id is None]
    if missing:
        violations.append(f"{len(missing)} submits never acknowledged (first: #{missing[0]})")
    acked = {job_id for job_id in acknowledged if job_id is not None}
    if len(acked) != len(acknowledged) - len(missing):
        violations.append("two different submits were answered with the same job")
    by_id = {row.id: row for row in job_rows}
    extra = set(by_id) - acked
    if extra:
        violations.append(
            f"{len(extra)} jobs in the database that no answer named: {sorted(extra)[:3]}"
        )

    attempts_of: dict[str, list[Any]] = defaultdict(list)
    for attempt in attempt_rows:
        attempts_of[attempt.job_id].append(attempt)
    artifacts_of: dict[str, list[Any]] = defaultdict(list)
    for artifact in artifact_rows:
        artifacts_of[artifact.job_id].append(artifact)

    statuses = Counter(row.status for row in job_rows)
    report.succeeded = statuses.get("succeeded", 0)
    report.failed = statuses.get("failed", 0)
    lost = [
        job_id for job_id in acked if job_id not in by_id or by_id[job_id].status != "succeeded"
    ]
    report.lost = len(lost)
    if lost:
        sample = [(j, by_id[j].status if j in by_id else "missing") for j in sorted(lost)[:3]]
        violations.append(f"{len(lost)} acknowledged jobs did not succeed, e.g. {sample}")
    if report.succeeded != config.jobs:
        violations.append(f"{report.succeeded} jobs succeeded, expected {config.jobs}")

    store_root = fleet.data_dir / "artifacts"
    duplicates = 0
    for row in job_rows:
        tries = attempts_of[row.id]
        won = [a for a in tries if a.outcome == "succeeded"]
        accepted = [a for a in artifacts_of[row.id] if a.accepted]
        accepted_attempts = {a.attempt_id for a in accepted}
        expected = int(_params(row.params).get("num_images", 1))
        if len(won) > 1 or len(accepted_attempts) > 1 or len(accepted) > expected:
            duplicates += 1
            violations.append(
                f"job {row.id}: {len(won)} succeeded attempts, accepted artifacts from "
                f"{len(accepted_attempts)} attempts ({len(accepted)} files)"
            )
        if any(a.outcome == "running" for a in tries):
            violations.append(f"job {row.id} ({row.status}) still has a running attempt")
        if row.attempts != len(tries):
            violations.append(
                f"job {row.id}: attempt counter {row.attempts}, {len(tries)} attempt rows"
            )
        if row.status != "succeeded":
            continue
        if [a.id for a in won] != [row.result_attempt_id]:
            violations.append(
                f"job {row.id}: result attempt {row.result_attempt_id}, succeeded attempts "
                f"{[a.id for a in won]}"
            )
        if accepted_attempts != {row.result_attempt_id} or sorted(a.idx for a in accepted) != list(
            range(expected)
        ):
            violations.append(
                f"job {row.id}: accepted outputs {sorted(a.idx for a in accepted)} from "
                f"{sorted(accepted_attempts)}, expected 0..{expected - 1} from its result attempt"
            )
        for artifact in accepted:
            problem = _check_png(store_root / artifact.key, artifact.sha256, config.size)
            if problem:
                violations.append(f"job {row.id} output {artifact.idx}: {problem}")
    report.duplicates = duplicates

    report.attempts_histogram = dict(Counter(len(attempts_of[row.id]) for row in job_rows))
    report.outcomes = dict(Counter(row.outcome for row in attempt_rows))
    # A killed worker's last attempt is the one the kill interrupted, if it had not finished;
    # its earlier attempts may have expired for other reasons (an orchestrator restart).
    last_on_node: dict[str, Any] = {}
    for attempt in sorted(attempt_rows, key=lambda a: a.started_at):
        last_on_node[attempt.node_id] = attempt
    report.kill_interrupted = sum(
        1
        for node in fleet.killed_nodes
        if node in last_on_node and last_on_node[node].outcome == "lease_expired"
    )
    report.dropped_by_workers = sum(
        text.count(marker)
        for path in fleet.all_worker_logs()
        if path.exists()
        for text in [path.read_text(errors="replace")]
        for marker in DROPPED_MARKERS
    )
    report.server_errors = sum(
        len(SERVER_ERROR.findall(path.read_text(errors="replace")))
        for path in fleet.orchestrator_logs
        if path.exists()
    )
    report.worker_starts = [
        w.ready_after for w in (*fleet.gone, *fleet.workers) if w.ready_after is not None
    ]
    report.unexpected_exits = list(fleet.unexpected_exits)
    violations += [f"unexpected exit: {text}" for text in fleet.unexpected_exits]
    del violations[50:]  # one broken invariant tends to repeat; the first ones tell the story


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    import json

    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}


def _check_png(path: Path, sha256: str, size: int) -> str | None:
    """None when the file is there, hashes as recorded and is a PNG of the requested size."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"file missing ({exc})"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "file does not match its recorded sha256"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG" or image.size != (size, size):
                return f"{image.format} of {image.size}, expected a {size}x{size} PNG"
    except OSError as exc:
        return f"not an image ({exc})"
    return None


# --- the docs ----------------------------------------------------------------------------------

DOCS_INTRO = """\
`bench/chaos.py` pushes jobs through a real fleet (one `imagefleet serve`, worker processes,
all on one machine) while it breaks it: random workers get SIGKILL (a replacement starts each
time, so the pool stays full), the orchestrator is restarted on the same port and data (SIGKILL
in the middle of the submits, SIGTERM while workers are busy), and on PostgreSQL the database
connection is cut for a few seconds. Leases are 3 s, reaped every 0.5 s; max_attempts is 10.
Submits carry an Idempotency-Key and are retried on connection errors.

Afterwards the database is audited: every acknowledged job succeeded (none lost), exactly once
(one attempt with outcome `succeeded`, one accepted set of artifacts, from that attempt), and
every accepted file is on disk with its recorded sha256 and decodes as a PNG of the requested
size. The run exits non-zero when any of that fails. The figures below are from single runs
on a machine shared with other work (see the load average), so the timings are rough.

"Attempts dropped by workers after a 409" are results thrown away because the lease had moved
on. Kills cause some (a job finished by nobody is requeued after its lease), and so does every
orchestrator restart or database outage, even one shorter than the lease: a worker's heartbeat
retries back off 0.5, 1, 2 s..., so its first beat after the restart often comes more than 3 s
after the last one, and by then the reaper has requeued the job."""


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def backend_version(fleet_url: str) -> str:
    if not fleet_url.startswith("postgresql"):
        return f"SQLite {sqlite3.sqlite_version}"
    try:
        import psycopg

        with psycopg.connect(fleet_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"
    except Exception:
        return "PostgreSQL"


def utc_date() -> str:
    done = subprocess.run(["date", "-u"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())


def docs_subsection(report: ChaosReport, command: str, backend: str) -> str:
    config = report.config
    verdict = (
        "every invariant held"
        if report.ok
        else "INVARIANTS BROKEN: " + "; ".join(report.violations[:5])
    )
    lines = [
        f"### {config.variant}",
        "",
        f"Command: `{command}`  ",
        f"Date: {utc_date()}  ",
        f"Machine: {machine_description()}; {backend}; load average at the start "
        f"{', '.join(f'{x:.1f}' for x in report.load_average)}  ",
        f"Setup: {config.jobs} jobs of {config.size}x{config.size}, {config.steps} steps, "
        f"{config.workers} workers, a SIGKILL every {config.kill_every:g} s on average, "
        f"{config.orchestrator_restarts} orchestrator restarts"
        + (f", one database outage ({config.pg_outage})" if config.backend == "postgresql" else "")
        + f"; fleet start-up before the first submit: {report.setup_seconds:.0f} s  ",
        f"Result: {verdict}",
        "",
        report.table(),
    ]
    return "\n".join(lines)


def write_docs(subsection: str, title: str, path: Path = DOCS_FILE) -> None:
    """Replaces this variant's subsection of the "## Chaos" section, keeping every other
    section of the file (other benchmarks write them) and the other variants' subsections.

    The file is read right before it is written and replaced in one rename, so a concurrent
    writer of another section loses nothing unless both write in the same instant."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == DOCS_SECTION), None)
    if start is None:
        before, after, section = lines, [], []
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before, section, after = lines[:start], lines[start + 1 : end], lines[end:]
    subsections: dict[str, list[str]] = {}
    current: str | None = None
    for line in section:
        if line.startswith("### "):
            current = line[4:].strip()
            subsections[current] = [line]
        elif current is not None:
            subsections[current].append(line)
    subsections[title] = subsection.splitlines()
    body = [DOCS_SECTION, "", *DOCS_INTRO.splitlines(), ""]
    ordered = sorted(subsections, key=lambda name: _variant_rank(name))
    for lines_of in (subsections[name] for name in ordered):
        while lines_of and not lines_of[-1].strip():
            lines_of.pop()
        body += [*lines_of, ""]
    while before and not before[-1].strip():
        before.pop()
    new = [*before, "", *body, *after]
    while new and not new[-1].strip():
        new.pop()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(new) + "\n")
    os.replace(tmp, path)


def _variant_rank(title: str) -> int:
    """The issue's runs first, in a fixed order; any other variant after them."""
    known = [
        "SQLite, sleep engine",
        "PostgreSQL, sleep engine",
        "SQLite, diffusers engine on the demo model",
    ]
    return known.index(title) if title in known else len(known)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = ChaosConfig()
    parser.add_argument("--jobs", type=int, default=d.jobs, help="Jobs to submit.")
    parser.add_argument("--workers", type=int, default=d.workers, help="Worker pool size.")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=d.kill_every,
        help="Mean seconds between worker SIGKILLs (exponential gaps); 0: no kills.",
    )
    parser.add_argument(
        "--orchestrator-restarts",
        type=int,
        default=d.orchestrator_restarts,
        help="Orchestrator restarts during the run.",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default=d.backend)
    parser.add_argument(
        "--engine",
        default=d.engine,
        help="Worker --engine: the sleep engine (default) or 'diffusers' for the real "
        "pipeline on the demo model.",
    )
    parser.add_argument(
        "--timeout", type=float, default=d.timeout, help="Seconds for all jobs to finish."
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed of the chaos schedule.")
    parser.add_argument("--sleep-min", type=float, default=d.sleep_min, help="Sleep engine.")
    parser.add_argument("--sleep-max", type=float, default=d.sleep_max, help="Sleep engine.")
    parser.add_argument("--size", type=int, default=d.size, help="Image width and height.")
    parser.add_argument("--steps", type=int, default=d.steps, help="Denoising steps per job.")
    parser.add_argument(
        "--pg-outage",
        choices=("proxy", "restart"),
        default=d.pg_outage,
        help="proxy: cut a TCP forwarder between orchestrator and database (default); "
        "restart: restart the real server with pg_ctlcluster (disturbs anything else using it).",
    )
    parser.add_argument("--pg-outage-seconds", type=float, default=d.pg_outage_seconds)
    parser.add_argument("--pg-admin-url", default=d.pg_admin_url, help="Where to create the DB.")
    parser.add_argument("--scratch", type=Path, default=None, help="Logs and data go here.")
    parser.add_argument("--keep", action="store_true", help="Keep logs and data afterwards.")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"Write the figures into the Chaos section of {DOCS_FILE.relative_to(REPO_ROOT)}.",
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> ChaosConfig:
    engine = SLEEP_ENGINE if args.engine in ("sleep", SLEEP_ENGINE) else args.engine
    return ChaosConfig(
        jobs=args.jobs,
        workers=args.workers,
        kill_every=args.kill_every,
        orchestrator_restarts=args.orchestrator_restarts,
        backend=args.backend,
        engine=engine,
        timeout=args.timeout,
        seed=args.seed,
        sleep_min=args.sleep_min,
        sleep_max=args.sleep_max,
        size=args.size,
        steps=args.steps,
        pg_outage=args.pg_outage,
        pg_outage_seconds=args.pg_outage_seconds,
        pg_admin_url=args.pg_admin_url,
        scratch=args.scratch,
        keep=args.keep,
    )


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the children


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    config = config_from(args)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Installed explicitly: a background job of a non-interactive shell starts with SIGINT
    # ignored, and Ctrl-C must still unwind through the cleanup.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = run_chaos(config, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(report.table())
    if report.violations:
        print("\nINVARIANTS BROKEN:")
        for line in report.violations:
            print(f"  - {line}")
    else:
        print("\nevery invariant held")
    if args.write_docs:
        command = shlex.join([".venv/bin/python", "bench/chaos.py", *argv])
        backend = backend_version(config.pg_admin_url if config.backend == "postgresql" else "")
        write_docs(docs_subsection(report, command, backend), config.variant)
        print(f"figures written to {DOCS_FILE}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
