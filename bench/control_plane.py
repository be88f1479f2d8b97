"""Control-plane benchmark: how many job lifecycles per second the orchestrator sustains, how
fast a claim is answered, and what the database does for each job, with no GPU involved.

Simulated workers (HTTP clients that claim, heartbeat once, upload a tiny PNG and complete at
once) and submitters run against real `imagefleet serve` processes on SQLite and PostgreSQL,
with one and two replicas. The same lifecycle is also run in a tight loop straight through
`JobLifecycle` on the database, with no HTTP, as the floor the API is compared with.

    .venv/bin/python bench/control_plane.py all --write-docs     # everything, ~8 min on 2 cores
    .venv/bin/python bench/control_plane.py throughput --jobs 1000 --workers 16
    .venv/bin/python bench/control_plane.py floor
    .venv/bin/python bench/control_plane.py idle --idle-workers 100
    .venv/bin/python bench/control_plane.py depth --depths 1000,100000,1000000

Parts:
  throughput  lifecycles/s (first submit to last complete), claim latency, errors, SQL
              statements and transactions per lifecycle (counted inside the server processes),
              CPU per lifecycle split between server, PostgreSQL, the simulated clients and
              anything else running on the machine.
  floor       the same lifecycle in-process on the database, one thread: the database's own
              cost per job, which the HTTP figures are divided by; statements counted per step.
  idle        one stream of jobs at a modest rate while 100 idle workers long-poll (workers
              that could take the jobs too, or ones too small for them); how long a new job
              waits before a worker has it.
  depth       claim latency with 1,000 / 100,000 / 1,000,000 queued jobs (filled with SQL
              straight into the jobs table), and EXPLAIN of the claim's candidate query.

Everything started here (orchestrators, threads, databases, scratch files) is stopped, dropped
or deleted on exit, on error and on Ctrl-C; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `from tests.load import ...` when run as a script

import httpx  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import event, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from imagefleet.config import Settings  # noqa: E402
from imagefleet.orchestrator.lifecycle import CANDIDATE_WINDOW, JobLifecycle  # noqa: E402
from imagefleet.protocol import (  # noqa: E402
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    HeartbeatRequest,
    Txt2ImgJob,
    Txt2ImgParams,
)
from imagefleet.store import jobs as job_sql  # noqa: E402
from imagefleet.store.database import Database  # noqa: E402
from imagefleet.store.keys import ApiKey, authenticate, create_key  # noqa: E402
from imagefleet.store.models import register_model  # noqa: E402
from imagefleet.store.tables import jobs as jobs_table  # noqa: E402
from tests.load import PARAMS, TINY_PNG, LoadLog, simulated_worker, submit_jobs  # noqa: E402
from tests.processes import OrchestratorProcess  # noqa: E402

PG_ADMIN_URL = os.environ.get("IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Control plane"

# The goals, for PostgreSQL on this 2-core machine.
GOAL_LIFECYCLES_PER_SECOND = 500.0
GOAL_IDLE_CLAIM_P99_MS = 50.0
GOAL_DEPTH_RATIO = 2.0

# Server settings for every run: no per-key rate limit (it would answer 429 to the submitters)
# and a lease long enough that nothing is ever reaped in the middle of a measurement.
SERVER_ENV = {
    "IMAGEFLEET_RATE_LIMIT_PER_SECOND": "0",
    "IMAGEFLEET_LEASE_SECONDS": "300",
}

# Counts SQL inside the orchestrator processes. Written as `sitecustomize.py` into a scratch
# folder put on the servers' PYTHONPATH, so the servers run unmodified code: every engine
# they create gets the listeners, and each process rewrites its totals to a JSON file a few
# times a second (and once more at exit) for the benchmark to add up.
COUNTING_HOOK = """
import atexit, json, os, threading

_DIR = os.environ.get("IMAGEFLEET_BENCH_COUNTS")
if _DIR:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    _LOCK = threading.Lock()
    _COUNTS = {
        "statements": 0, "transactions": 0, "commits": 0, "rollbacks": 0, "checkouts": 0,
        "connects": 0,
    }

    def _bump(key):
        with _LOCK:
            _COUNTS[key] += 1

    def _on_execute(conn, cursor, statement, parameters, context, executemany):
        # SQLite's BEGIN [IMMEDIATE] is a cursor execute here; it is counted as a transaction.
        if not statement.startswith("BEGIN"):
            _bump("statements")

    event.listen(Engine, "before_cursor_execute", _on_execute)
    event.listen(Engine, "begin", lambda conn: _bump("transactions"))
    event.listen(Engine, "commit", lambda conn: _bump("commits"))
    event.listen(Engine, "rollback", lambda conn: _bump("rollbacks"))
    event.listen(Pool, "checkout", lambda *args: _bump("checkouts"))
    event.listen(Pool, "connect", lambda *args: _bump("connects"))

    _PATH = os.path.join(_DIR, "counts-%d.json" % os.getpid())

    def _dump():
        with _LOCK:
            data = json.dumps(_COUNTS)
        with open(_PATH + ".tmp", "w") as out:
            out.write(data)
        os.replace(_PATH + ".tmp", _PATH)

    def _loop():
        while True:
            threading.Event().wait(0.2)
            _dump()

    threading.Thread(target=_loop, name="bench-counts", daemon=True).start()
    atexit.register(_dump)
"""


# --- small helpers -----------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values (shown as "-")."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float | int | str | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: readable in a terminal and pasted as is into the docs."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def say(message: str) -> None:
    print(message, flush=True)


# --- the machine -------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    """`lscpu | grep 'Model name'`, without the label."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def wait_for_quiet(max_seconds: float, threshold: float = 1.0) -> tuple[float, float]:
    """Waits (bounded) until the 1-minute load average drops under `threshold`, because other
    processes on this small machine take CPU from the servers and skew every figure. Returns
    (load when measuring starts, seconds waited)."""
    started = time.monotonic()
    load = os.getloadavg()[0]
    if load >= threshold and max_seconds > 0:
        say(f"load average {load:.2f} >= {threshold}: waiting up to {max_seconds:.0f}s for quiet")
    while load >= threshold and time.monotonic() - started < max_seconds:
        time.sleep(min(5.0, max(0.1, max_seconds - (time.monotonic() - started))))
        load = os.getloadavg()[0]
    return load, time.monotonic() - started


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process in seconds; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _postgres_pids(database: str | None) -> list[int]:
    """The PostgreSQL backends connected to this run's own database: other sessions' use of
    the same server is not ours to count."""
    if database is None:
        return []
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def _machine_busy() -> float:
    """CPU seconds spent not idle, all cores together, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuSample:
    """Where the machine's CPU went between two samples, in CPU seconds."""

    machine: float
    server: float
    postgres: float
    bench: float

    @property
    def other(self) -> float:
        """Everything else on the machine: other people's tests, the OS."""
        return max(0.0, self.machine - self.server - self.postgres - self.bench)


class CpuMeter:
    """Samples CPU time of the server processes, PostgreSQL, this process and the machine, so
    a result says where the time went and how much of it other processes took. PostgreSQL
    counts the backends of this run's database; those that start and end between the two
    samples are missed (see "new conns/job") and land in "other"."""

    def __init__(self, server_pids: list[int], database: str | None) -> None:
        self.server_pids = [p for pid in server_pids for p in (pid, *_children(pid))]
        self.database = database
        self.start, self.start_pg = self._sample()
        self.started_at = time.perf_counter()

    def _sample(self) -> tuple[CpuSample, dict[int, float]]:
        times = os.times()
        postgres = {pid: _proc_cpu(pid) for pid in _postgres_pids(self.database)}
        sample = CpuSample(
            machine=_machine_busy(),
            server=sum(_proc_cpu(pid) for pid in self.server_pids),
            postgres=0.0,
            bench=times.user + times.system,
        )
        return sample, postgres

    def stop(self) -> tuple[CpuSample, float]:
        """CPU seconds used since the start, and the wall seconds elapsed."""
        end, end_pg = self._sample()
        used = CpuSample(
            machine=end.machine - self.start.machine,
            server=end.server - self.start.server,
            # A backend born meanwhile counts whole; one gone meanwhile is lost.
            postgres=sum(cpu - self.start_pg.get(pid, 0.0) for pid, cpu in end_pg.items()),
            bench=end.bench - self.start.bench,
        )
        return used, time.perf_counter() - self.started_at


def read_counts(folder: Path) -> Counter[str]:
    """The SQL counters of every server process that wrote into `folder`, added up."""
    total: Counter[str] = Counter()
    for path in folder.glob("counts-*.json"):
        with contextlib.suppress(OSError, ValueError):
            total.update(json.loads(path.read_text()))
    return total


class StatementCounter:
    """The same counters as the server hook, on one in-process engine (for the floor)."""

    def __init__(self, db: Database) -> None:
        self.counts: Counter[str] = Counter()
        engine = db.engine
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine, "begin", lambda conn: self.counts.update(("transactions",)))
        event.listen(engine, "checkout", lambda *args: self.counts.update(("checkouts",)))

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            self.counts["statements"] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)


# --- what a run needs: databases, keys, servers, clean-up --------------------------------------


@dataclass
class Fleet:
    """A migrated database with a client key, a worker key and the `demo` model."""

    backend: str
    url: str
    client: ApiKey
    client_token: str
    worker: ApiKey
    worker_token: str
    database: str | None  # PostgreSQL: the database's name


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

    def fresh(self, backend: str) -> Fleet:
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
        return Fleet(backend, url, client, client_token, worker, worker_token, name)

    @staticmethod
    def _drop(name: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def serve(
        self, fleet: Fleet, replicas: int, env: dict[str, str] | None = None
    ) -> tuple[list[OrchestratorProcess], Path]:
        """`replicas` orchestrator processes on the same database (for SQLite: the same file,
        which is allowed; SQLite is the single-machine default). Returns them and the folder
        their SQL counters are written to."""
        self.serial += 1
        counts = self.scratch / f"counts-{self.serial}"
        counts.mkdir()
        python_path = os.pathsep.join(
            p for p in (str(self.hook_dir), os.environ.get("PYTHONPATH", "")) if p
        )
        full_env = {
            **SERVER_ENV,
            "IMAGEFLEET_DATABASE_URL": fleet.url,
            "IMAGEFLEET_BENCH_COUNTS": str(counts),
            "PYTHONPATH": python_path,
            **(env or {}),
        }
        data_dir = self.scratch / f"server-{self.serial}"  # shared: one artifact folder
        servers = []
        for _ in range(replicas):
            server = OrchestratorProcess(data_dir, env=full_env)
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


# --- part 1: throughput over HTTP --------------------------------------------------------------


@dataclass
class ThroughputResult:
    backend: str
    replicas: int
    jobs: int
    workers: int
    completed: int
    seconds: float
    claim_p50_ms: float
    claim_p99_ms: float
    errors: int
    first_error: str
    statements: float  # per lifecycle, all server processes
    transactions: float
    checkouts: float
    connects: float  # new database connections opened (pool overflow churn)
    cpu_ms: dict[str, float]  # per lifecycle: server, postgres, clients, other
    machine_busy: float  # fraction of all cores
    load: float

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def _drive(
    bench: Bench,
    fleet: Fleet,
    urls: list[str],
    jobs: int,
    workers: int,
    submitters: int,
    timeout: float,
) -> tuple[LoadLog, float, list[str]]:
    """Submitters and simulated workers at once; returns the workers' log, the wall seconds
    from the first submit to the last complete, and the submitters' errors."""
    log = LoadLog()
    stop = threading.Event()
    submit_errors: list[str] = []

    def feed() -> None:
        try:
            submit_jobs(urls, fleet.client_token, jobs, threads=submitters)
        except Exception as exc:
            submit_errors.append(str(exc))

    def done() -> bool:
        return stop.is_set() or log.completed >= jobs

    threads = [
        threading.Thread(
            target=simulated_worker,
            args=(f"w{i}", urls[i % len(urls) :] + urls[: i % len(urls)], fleet.worker_token),
            kwargs={"log": log, "done": done, "deadline_seconds": timeout},
            daemon=True,
        )
        for i in range(workers)
    ]
    feeder = threading.Thread(target=feed, daemon=True)
    started = time.perf_counter()
    feeder.start()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while log.completed < jobs and time.monotonic() < deadline:
            if not any(t.is_alive() for t in threads) or (submit_errors and not feeder.is_alive()):
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        join_until = time.monotonic() + 10
        for thread in threads:
            thread.join(timeout=max(0.0, join_until - time.monotonic()))
        # The submitters stop only when all jobs are in or a request fails: after a timeout or
        # Ctrl-C, stopping the servers ends them; the bench reaps them after that.
        feeder.join(timeout=1.0)
        bench.threads.extend(t for t in [*threads, feeder] if t.is_alive())
    return log, elapsed, submit_errors


def run_throughput(
    bench: Bench, backend: str, replicas: int, profile: bool = False
) -> ThroughputResult:
    """One configuration: a fresh database, `replicas` servers, a warm-up, then the measured
    jobs. With `profile`, py-spy samples the first server meanwhile (an extra run, so that its
    own CPU use does not skew the reported one)."""
    args = bench.args
    say(
        f"throughput: {backend}, {replicas} replica(s), {args.jobs} jobs, {args.workers} workers"
        + (", profiled" if profile else "")
    )
    fleet = bench.fresh(backend)
    servers, counts_dir = bench.serve(fleet, replicas)
    urls = [s.url for s in servers]
    try:
        if args.warmup:
            _drive(bench, fleet, urls, args.warmup, args.workers, args.submitters, args.run_timeout)
        time.sleep(0.5)
        counts_before = read_counts(counts_dir)
        spy = _start_profile(bench, servers[0]) if profile else None
        load = os.getloadavg()[0]
        meter = CpuMeter([s.process.pid for s in servers if s.process], fleet.database)
        log, seconds, submit_errors = _drive(
            bench, fleet, urls, args.jobs, args.workers, args.submitters, args.run_timeout
        )
        used, wall = meter.stop()
        if spy:
            _finish_profile(bench, spy)
        time.sleep(0.6)
        counts = read_counts(counts_dir)
        counts.subtract(counts_before)
    finally:
        bench.stop(servers)
    claims = [c.claim_seconds * 1000 for c in log.claims]
    done = max(1, log.completed)
    errors = [*submit_errors, *log.errors]
    return ThroughputResult(
        backend=backend,
        replicas=replicas,
        jobs=args.jobs,
        workers=args.workers,
        completed=log.completed,
        seconds=seconds,
        claim_p50_ms=percentile(claims, 50),
        claim_p99_ms=percentile(claims, 99),
        errors=len(errors),
        first_error=errors[0][:200] if errors else "",
        statements=counts["statements"] / done,
        transactions=counts["transactions"] / done,
        checkouts=counts["checkouts"] / done,
        connects=counts["connects"] / done,
        cpu_ms={
            "server": used.server * 1000 / done,
            "postgres": used.postgres * 1000 / done,
            "clients": used.bench * 1000 / done,
            "other": used.other * 1000 / done,
        },
        machine_busy=used.machine / max(1e-9, wall) / (os.cpu_count() or 1),
        load=load,
    )


# --- optional profile of one server process ----------------------------------------------------


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    output: Path


PROFILE_BUCKETS = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("sqlite3", "sqlite3"),
    ("pydantic", "/pydantic"),
    ("fastapi", "/fastapi/"),
    ("starlette", "/starlette/"),
    ("uvicorn+h11", "/uvicorn/"),
    ("uvicorn+h11", "/h11/"),
    ("anyio (thread hand-off)", "/anyio/"),
    ("asyncio", "/asyncio/"),
    ("logging", "/logging/"),
    ("json", "/json/"),
    ("imagefleet", "/imagefleet/"),
    ("threading", "threading.py"),
)


# Frames counted inclusively in a profile: the route handlers and what they call into.
HANDLER_MODULES = (
    "orchestrator/routes_",
    "orchestrator/lifecycle.py",
    "orchestrator/auth.py",
    "orchestrator/views.py",
)


def _start_profile(bench: Bench, server: OrchestratorProcess) -> Profile | None:
    """py-spy on one server process for the measured window: where its CPU goes."""
    spy = REPO / ".venv" / "bin" / "py-spy"
    if not spy.exists() or server.process is None:
        return None
    output = bench.scratch / "profile.txt"
    command = [str(spy), "record", "--nonblocking", "--gil", "--full-filenames", "-r", "200"]
    command += ["-f", "raw"]
    command += ["-d", str(int(bench.args.run_timeout)), "-o", str(output)]
    command += ["-p", str(server.process.pid)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.stack.callback(_stop_child, process)
    time.sleep(1.0)  # py-spy attaches
    return Profile(process, output)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _finish_profile(bench: Bench, profile: Profile) -> None:
    """Stops py-spy (it writes on SIGINT) and keeps a summary: samples holding the GIL by
    package of the innermost frame (self time), and by route handler (inclusive)."""
    _stop_child(profile.process)
    if not profile.output.exists():
        bench.profile_summary = ["py-spy wrote nothing (could not attach?)"]
        return
    if bench.args.profile_out:
        shutil.copyfile(profile.output, bench.args.profile_out)
    by_bucket: Counter[str] = Counter()
    by_handler: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in profile.output.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        bucket = next((name for name, marker in PROFILE_BUCKETS if marker in leaf), "other")
        by_bucket[bucket] += count
        name, _, where = leaf.partition(" (")
        if name.strip():
            by_function[f"{name} ({where.rsplit('/', 1)[-1]}"] += count
        for frame in frames:
            if any(f"/imagefleet/{m}" in frame for m in HANDLER_MODULES):
                by_handler[frame.split(" (")[0]] += count
    summary = [f"{total} samples holding the GIL (200/s)"]
    summary += [
        f"self {name}: {100 * n / max(1, total):.0f}%" for name, n in by_bucket.most_common(8)
    ]
    summary += [
        f"incl. {name}: {100 * n / max(1, total):.0f}%" for name, n in by_handler.most_common(10)
    ]
    summary += [
        f"hot {name}: {100 * n / max(1, total):.1f}%" for name, n in by_function.most_common(8)
    ]
    bench.profile_summary = summary


# --- part 2: the floor, in-process on the database ---------------------------------------------


STEPS = ("auth", "submit", "claim", "heartbeat", "upload", "complete")


@dataclass
class FloorResult:
    backend: str
    variant: str  # "lifecycle" or "lifecycle + per-request reads"
    lifecycles: int
    seconds: float
    claim_p50_ms: float
    statements: float
    transactions: float
    checkouts: float
    per_step: dict[str, float]  # statements per lifecycle, by step
    cpu_ms: dict[str, float]  # per lifecycle: this process (Python), postgres, other
    load: float

    @property
    def per_second(self) -> float:
        return self.lifecycles / self.seconds if self.seconds > 0 else 0.0


def run_floor(bench: Bench, backend: str, with_reads: bool) -> FloorResult:
    """submit, claim, heartbeat, record upload, complete through JobLifecycle in one thread.
    With `with_reads`, also the reads the HTTP routes add around those calls: the API-key
    lookup of each of the 5 requests, the upload's lease check and the submit's job view."""
    args = bench.args
    variant = "lifecycle + HTTP-path reads" if with_reads else "lifecycle"
    say(f"floor: {backend}, {variant}")
    fleet = bench.fresh(backend)
    db = Database(fleet.url)
    settings = Settings(
        data_dir=bench.scratch / f"floor-{bench.serial}",
        database_url=fleet.url,
        lease_seconds=300,
    )
    lifecycle = JobLifecycle(db, settings)
    counter = StatementCounter(lifecycle.db)
    job = Txt2ImgJob(params=Txt2ImgParams.model_validate(PARAMS))
    claim = ClaimRequest(worker_id="floor", node_id="floor")
    beat = HeartbeatRequest(step=1, total_steps=1)
    finish = CompleteRequest(outputs=[CompletedOutput(index=0, seed=0, width=64, height=64)])
    per_step: Counter[str] = Counter()
    claim_ms: list[float] = []

    def step(name: str, call: Callable[[], Any]) -> Any:
        before = counter.counts["statements"]
        result = call()
        per_step[name] += counter.counts["statements"] - before
        return result

    def authenticate_as(token: str) -> None:
        def lookup() -> None:
            with db.read() as conn:
                assert authenticate(conn, token) is not None

        step("auth", lookup)

    def one(measured: bool) -> None:
        if with_reads:
            authenticate_as(fleet.client_token)
        row, _ = step("submit", lambda: lifecycle.submit(fleet.client, job))
        if with_reads:

            def view() -> None:
                with db.read() as conn:
                    lifecycle.outputs(conn, [row.id])

            step("submit", view)
            authenticate_as(fleet.worker_token)
        started = time.perf_counter()
        assignment = step("claim", lambda: lifecycle.claim(fleet.worker, claim))
        if measured:
            claim_ms.append((time.perf_counter() - started) * 1000)
        assert assignment is not None and assignment.job_id == row.id
        attempt = assignment.attempt_id
        if with_reads:
            authenticate_as(fleet.worker_token)
        step("heartbeat", lambda: lifecycle.heartbeat(fleet.worker, attempt, beat))
        if with_reads:
            authenticate_as(fleet.worker_token)
            step("upload", lambda: lifecycle.check_current(fleet.worker, attempt))
        step(
            "upload",
            lambda: lifecycle.record_upload(
                fleet.worker,
                attempt,
                index=0,
                key=f"jobs/{row.id}/{attempt}/0.png",
                size=len(TINY_PNG),
                sha256="0" * 64,
                content_type="image/png",
            ),
        )
        if with_reads:
            authenticate_as(fleet.worker_token)
        step("complete", lambda: lifecycle.complete(fleet.worker, attempt, finish))

    try:
        for _ in range(args.warmup):
            one(measured=False)
        per_step.clear()
        before = counter.snapshot()
        load = os.getloadavg()[0]
        meter = CpuMeter([], fleet.database)
        started = time.perf_counter()
        deadline = started + args.floor_seconds
        done = 0
        while done < args.floor_jobs and time.perf_counter() < deadline:
            one(measured=True)
            done += 1
        seconds = time.perf_counter() - started
        used, _ = meter.stop()
        counts = counter.snapshot()
        counts.subtract(before)
    finally:
        db.dispose()
    n = max(1, done)
    return FloorResult(
        backend=backend,
        variant=variant,
        lifecycles=done,
        seconds=seconds,
        claim_p50_ms=percentile(claim_ms, 50),
        statements=counts["statements"] / n,
        transactions=counts["transactions"] / n,
        checkouts=counts["checkouts"] / n,
        per_step={name: per_step[name] / n for name in STEPS if per_step[name]},
        cpu_ms={
            "python": used.bench * 1000 / n,
            "postgres": used.postgres * 1000 / n,
            "other": used.other * 1000 / n,
        },
        load=load,
    )


# --- part 3: claims while 100 idle workers long-poll -------------------------------------------

IDLE_VARIANTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    # name: (description, capabilities of the idle workers)
    "none": ("no idle workers (baseline)", None),
    "same": ("idle workers that could take the jobs too", {}),
    "other": ("idle workers for another kind of job", {"kinds": []}),
    "small": ("idle workers too small for the jobs", {"max_pixels": 64}),
}


@dataclass
class IdleResult:
    backend: str
    variant: str
    idle_workers: int
    rate: float
    submitted: int
    dispatched: int
    dispatch_p50_ms: float
    dispatch_p99_ms: float
    dispatch_max_ms: float
    transactions_per_job: float  # all server transactions while submitting, per job submitted
    statements_per_job: float
    server_cpu: float  # fraction of one core
    clients_cpu: float  # the benchmark's own event loop, fraction of one core
    server_wait_p50_ms: float  # started_at - created_at as the database has them
    server_wait_p99_ms: float
    submit_p50_ms: float
    errors: int
    first_error: str
    load: float


@dataclass
class _IdleLog:
    submitted: dict[str, float] = field(default_factory=dict)  # job id -> submit sent
    submit_ms: list[float] = field(default_factory=list)  # submit round trips
    claimed: dict[str, tuple[float, float]] = field(default_factory=dict)  # -> (sent, received)
    errors: list[str] = field(default_factory=list)


async def _idle_session(
    fleet: Fleet, url: str, idle: int, capabilities: dict[str, Any] | None, bench: Bench
) -> tuple[_IdleLog, float]:
    """One active worker, `idle` idle ones and a submitter at a fixed rate, all in one event
    loop (cheap on the CPU the servers need). Returns the log and the measured seconds."""
    args = bench.args
    log = _IdleLog()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=idle + 8, max_keepalive_connections=idle + 8)
    worker_headers = {"Authorization": f"Bearer {fleet.worker_token}"}
    client_headers = {"Authorization": f"Bearer {fleet.client_token}"}

    async def worker(http: httpx.AsyncClient, name: str, caps: dict[str, Any]) -> None:
        body = {"worker_id": name, "node_id": name, "wait_seconds": args.idle_wait}
        if caps:
            body["capabilities"] = caps
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/worker/claim", json=body)
                response.raise_for_status()
                received = time.perf_counter()
                assignment = response.json()["assignment"]
                if assignment is None:
                    continue
                log.claimed[assignment["job_id"]] = (sent, received)
                prefix = f"{url}/v1/worker/attempts/{assignment['attempt_id']}"
                beat = await http.post(f"{prefix}/heartbeat", json={"step": 1, "total_steps": 1})
                beat.raise_for_status()
                upload = await http.put(
                    f"{prefix}/outputs/0", content=TINY_PNG, headers={"Content-Type": "image/png"}
                )
                upload.raise_for_status()
                outputs = [{"index": 0, "seed": 0, "width": 64, "height": 64}]
                done = await http.post(f"{prefix}/complete", json={"outputs": outputs})
                done.raise_for_status()
            except httpx.HTTPError as exc:
                log.errors.append(f"{name}: {exc!r}")
                await asyncio.sleep(0.2)

    async def submit_one(http: httpx.AsyncClient) -> None:
        sent = time.perf_counter()
        try:
            response = await http.post(f"{url}/v1/jobs", json={"kind": "txt2img", "params": PARAMS})
            response.raise_for_status()
            log.submitted[response.json()["id"]] = sent
            log.submit_ms.append((time.perf_counter() - sent) * 1000)
        except httpx.HTTPError as exc:
            log.errors.append(f"submit: {exc!r}")

    async def submitter(http: httpx.AsyncClient, seconds: float) -> None:
        """Submits on a fixed schedule, each submit in its own task, so that a slow answer
        does not lower the rate."""
        period = 1.0 / args.idle_rate
        start = time.perf_counter()
        due = start
        pending: set[asyncio.Task[None]] = set()
        while due - start < seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            due += period
            task = asyncio.create_task(submit_one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=30)

    async with (
        httpx.AsyncClient(headers=worker_headers, timeout=60, limits=limits) as idle_http,
        httpx.AsyncClient(headers=worker_headers, timeout=60) as active_http,
        httpx.AsyncClient(headers=client_headers, timeout=30) as client_http,
    ):
        tasks = [
            asyncio.create_task(worker(idle_http, f"idle-{i}", capabilities or {}))
            for i in range(idle)
        ]
        await asyncio.sleep(args.idle_settle if idle else 0.2)  # all of them waiting
        tasks.append(asyncio.create_task(worker(active_http, "active", {})))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await submitter(client_http, args.idle_seconds)
        drain_until = time.perf_counter() + 15.0
        while time.perf_counter() < drain_until and not set(log.submitted) <= set(log.claimed):
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return log, seconds


def server_waits(fleet: Fleet, job_ids: list[str]) -> list[float]:
    """How long each job stayed queued by the server's own clock (claim time minus submit
    time, in ms): a check on the client-side figure that no client delay can inflate."""
    if not job_ids:
        return []
    db = Database(fleet.url)
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(jobs_table.c.started_at - jobs_table.c.created_at).where(
                    jobs_table.c.id.in_(job_ids), jobs_table.c.started_at.is_not(None)
                )
            ).scalars()
            return [float(value) * 1000 for value in rows]
    finally:
        db.dispose()


def run_idle(bench: Bench, backend: str, variant: str) -> IdleResult:
    args = bench.args
    description, capabilities = IDLE_VARIANTS[variant]
    idle = 0 if capabilities is None else args.idle_workers
    say(f"idle: {backend}, {idle} {description}, {args.idle_rate:g} jobs/s")
    fleet = bench.fresh(backend)
    servers, counts_dir = bench.serve(fleet, 1)
    try:
        counts_before = read_counts(counts_dir)
        load = os.getloadavg()[0]
        meter = CpuMeter([s.process.pid for s in servers if s.process], fleet.database)
        log, seconds = asyncio.run(_idle_session(fleet, servers[0].url, idle, capabilities, bench))
        used, _ = meter.stop()
        time.sleep(0.6)
        counts = read_counts(counts_dir)
        counts.subtract(counts_before)
        queued_for = server_waits(fleet, list(log.submitted))
    finally:
        bench.stop(servers)
    waits = []
    for job_id, (_, received) in log.claimed.items():
        if job_id in log.submitted:  # from the submit being sent to a worker having the job
            waits.append((received - log.submitted[job_id]) * 1000)
    return IdleResult(
        backend=backend,
        variant=variant,
        idle_workers=idle,
        rate=args.idle_rate,
        submitted=len(log.submitted),
        dispatched=len(waits),
        dispatch_p50_ms=percentile(waits, 50),
        dispatch_p99_ms=percentile(waits, 99),
        dispatch_max_ms=max(waits) if waits else math.nan,
        transactions_per_job=counts["transactions"] / max(1, len(log.submitted)),
        statements_per_job=counts["statements"] / max(1, len(log.submitted)),
        server_cpu=used.server / max(1e-9, seconds),
        clients_cpu=used.bench / max(1e-9, seconds),
        server_wait_p50_ms=percentile(queued_for, 50),
        server_wait_p99_ms=percentile(queued_for, 99),
        submit_p50_ms=percentile(log.submit_ms, 50),
        errors=len(log.errors),
        first_error=log.errors[0][:200] if log.errors else "",
        load=load,
    )


# --- part 4: claim latency against a deep queue -------------------------------------------------


@dataclass
class DepthResult:
    backend: str
    depth: int
    fill_seconds: float
    claims: int
    claim_p50_ms: float
    claim_p99_ms: float
    submit_p50_ms: float
    plan: str
    uses_queue_index: bool
    candidate_query_ms: float
    errors: int
    load: float


def _fill(fleet: Fleet, template_id: str, count: int, deadline: float) -> None:
    """Adds `count` queued copies of the template job with SQL straight into the table: the
    API would take far too long for a million jobs. Committed in chunks, so that Ctrl-C and
    the time bound land between them."""
    db = Database(fleet.url)
    columns = (
        "id, owner_key_id, tier, kind, status, priority, params, model_id, pixels, created_at, "
        "progress_step, progress_total, attempts, max_attempts, allow_same_node"
    )
    if db.is_sqlite:
        statement = text(
            f"INSERT INTO jobs ({columns}) "
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n) "
            "SELECT lower(hex(randomblob(16))), t.owner_key_id, t.tier, t.kind, 'queued', "
            "t.priority, t.params, t.model_id, t.pixels, :base + seq.i * 1e-6, 0, 0, 0, "
            "t.max_attempts, 0 FROM seq, jobs AS t WHERE t.id = :template"
        )
    else:
        statement = text(
            f"INSERT INTO jobs ({columns}) "
            "SELECT md5(random()::text || i::text), t.owner_key_id, t.tier, t.kind, 'queued', "
            "t.priority, t.params, t.model_id, t.pixels, :base + i * 1e-6, 0, 0, 0, "
            "t.max_attempts, false FROM generate_series(1, :n) AS i, jobs AS t "
            "WHERE t.id = :template"
        )
    try:
        left = count
        while left > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"filling the queue took too long ({left} jobs left)")
            chunk = min(left, 100_000)
            with db.write() as conn:
                conn.execute(statement, {"n": chunk, "base": time.time(), "template": template_id})
            left -= chunk
    finally:
        db.dispose()
    if fleet.backend == "postgresql":
        # What autovacuum does soon after a bulk insert anyway: fresh statistics for the planner.
        with psycopg.connect(_libpq(fleet.url), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) jobs")


def _libpq(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def queued_count(fleet: Fleet) -> int:
    db = Database(fleet.url)
    try:
        with db.read() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'")).scalar_one()
            )
    finally:
        db.dispose()


def candidate_plan(fleet: Fleet) -> tuple[str, bool, float]:
    """EXPLAIN of the claim's candidate query, captured as the store really sends it (so this
    stays true when the query changes): the plan, whether it walks ix_jobs_queue, and its
    execution time where the database reports one."""
    db = Database(fleet.url)
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "JOIN models" in statement and "jobs.status" in statement:
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        with db.read() as conn:
            job_sql.queued_candidates(conn, ["txt2img"], CANDIDATE_WINDOW, time.time())
        if not captured:
            return "candidate query not found", False, math.nan
        statement, parameters = captured[0]
        with db.read() as conn:
            if db.is_sqlite:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
                plan = "; ".join(str(row[-1]) for row in rows)
                started = time.perf_counter()
                conn.exec_driver_sql(statement, parameters).all()
                elapsed = (time.perf_counter() - started) * 1000
            else:
                rows = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                ).all()
                lines = [str(row[0]) for row in rows]
                elapsed = next(
                    (
                        float(line.split(":")[1].split()[0])
                        for line in lines
                        if line.startswith("Execution Time")
                    ),
                    math.nan,
                )
                plan = " / ".join(line.strip() for line in lines if "->" in line or "Scan" in line)
    finally:
        db.dispose()
    return plan, "ix_jobs_queue" in plan, elapsed


def _claims(fleet: Fleet, url: str, count: int, timeout: float) -> LoadLog:
    """`count` sequential claim-upload-complete rounds by one simulated worker, no waiting,
    or fewer when `timeout` runs out (a claim that scans the whole queue can take a second)."""
    log = LoadLog()
    simulated_worker(
        "depth",
        [url],
        fleet.worker_token,
        log,
        lambda: log.completed >= count or len(log.errors) > 10,
        wait_seconds=0.0,
        deadline_seconds=timeout,
    )
    return log


def run_depth(bench: Bench, backend: str, depths: list[int]) -> list[DepthResult]:
    args = bench.args
    fleet = bench.fresh(backend)
    # One key owns the whole queue here, so its queued-jobs limit must be out of the way.
    servers, _ = bench.serve(fleet, 1, env={"IMAGEFLEET_MAX_QUEUED_PER_KEY": "100000000"})
    url = servers[0].url
    results = []
    try:
        headers = {"Authorization": f"Bearer {fleet.client_token}"}
        with httpx.Client(headers=headers, timeout=60) as http:
            response = http.post(f"{url}/v1/jobs", json={"kind": "txt2img", "params": PARAMS})
            response.raise_for_status()
            template = response.json()["id"]
            for depth in sorted(depths):
                say(f"depth: {backend}, filling to {depth:,} queued jobs")
                started = time.perf_counter()
                missing = depth - queued_count(fleet)
                if missing > 0:
                    _fill(fleet, template, missing, time.monotonic() + args.fill_timeout)
                fill_seconds = time.perf_counter() - started
                plan, uses_index, query_ms = candidate_plan(fleet)
                load = os.getloadavg()[0]
                warm = _claims(fleet, url, 20, args.depth_seconds / 4)
                log = _claims(fleet, url, args.depth_claims, args.depth_seconds)
                submits = []
                for _ in range(args.depth_submits):
                    begun = time.perf_counter()
                    http.post(
                        f"{url}/v1/jobs", json={"kind": "txt2img", "params": PARAMS}
                    ).raise_for_status()
                    submits.append((time.perf_counter() - begun) * 1000)
                claims = [c.claim_seconds * 1000 for c in log.claims]
                results.append(
                    DepthResult(
                        backend=backend,
                        depth=depth,
                        fill_seconds=fill_seconds,
                        claims=len(claims),
                        claim_p50_ms=percentile(claims, 50),
                        claim_p99_ms=percentile(claims, 99),
                        submit_p50_ms=percentile(submits, 50),
                        plan=plan,
                        uses_queue_index=uses_index,
                        candidate_query_ms=query_ms,
                        errors=len(warm.errors) + len(log.errors),
                        load=load,
                    )
                )
                say(
                    f"  claim p50 {fmt(results[-1].claim_p50_ms)} ms, "
                    f"p99 {fmt(results[-1].claim_p99_ms)} ms, index used: {uses_index}"
                )
    finally:
        bench.stop(servers)
    return results


# --- reporting ---------------------------------------------------------------------------------


@dataclass
class Results:
    throughput: list[ThroughputResult] = field(default_factory=list)
    floor: list[FloorResult] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)
    depth: list[DepthResult] = field(default_factory=list)


def throughput_table(results: Results) -> str:
    floors = {f.backend: f for f in results.floor if f.variant == "lifecycle"}
    rows = []
    for r in results.throughput:
        floor = floors.get(r.backend)
        ratio = f"{r.per_second / floor.per_second:.2f}" if floor and floor.per_second else "-"
        cpu = r.cpu_ms
        rows.append(
            [
                r.backend,
                str(r.replicas),
                f"{r.completed}/{r.jobs}",
                fmt(r.per_second),
                ratio,
                fmt(r.claim_p50_ms),
                fmt(r.claim_p99_ms),
                str(r.errors),
                fmt(r.statements),
                fmt(r.transactions),
                fmt(r.connects, 2),
                f"{cpu['server']:.1f} / {cpu['postgres']:.1f} / {cpu['clients']:.1f} / "
                f"{cpu['other']:.1f}",
                f"{100 * r.machine_busy:.0f}%",
                fmt(r.load, 2),
            ]
        )
    return table(
        [
            "backend",
            "replicas",
            "done",
            "lifecycles/s",
            "÷ floor",
            "claim p50 ms",
            "claim p99 ms",
            "errors",
            "SQL stmts/job",
            "txns/job",
            "new conns/job",
            "CPU ms/job: server / pg / clients / other",
            "CPU busy",
            "load",
        ],
        rows,
    )


def floor_table(results: Results) -> str:
    rows = [
        [
            f.backend,
            f.variant,
            str(f.lifecycles),
            fmt(f.per_second),
            fmt(f.claim_p50_ms, 2),
            fmt(f.statements),
            fmt(f.transactions),
            fmt(f.checkouts),
            ", ".join(f"{k} {v:.0f}" for k, v in f.per_step.items()),
            " / ".join(f"{f.cpu_ms[k]:.1f}" for k in ("python", "postgres", "other")),
            fmt(f.load, 2),
        ]
        for f in results.floor
    ]
    return table(
        [
            "backend",
            "floor",
            "lifecycles",
            "lifecycles/s",
            "claim p50 ms",
            "SQL stmts/job",
            "txns/job",
            "pool checkouts/job",
            "statements by step",
            "CPU ms/job: python / pg / other",
            "load",
        ],
        rows,
    )


def idle_table(results: Results) -> str:
    rows = [
        [
            r.backend,
            f"{r.idle_workers} ({r.variant})",
            f"{r.rate:g}",
            f"{r.dispatched}/{r.submitted}",
            fmt(r.dispatch_p50_ms),
            fmt(r.dispatch_p99_ms),
            fmt(r.dispatch_max_ms),
            f"{fmt(r.server_wait_p50_ms)} / {fmt(r.server_wait_p99_ms)}",
            fmt(r.submit_p50_ms),
            fmt(r.transactions_per_job),
            fmt(r.statements_per_job),
            f"{100 * r.server_cpu:.0f}%",
            f"{100 * r.clients_cpu:.0f}%",
            str(r.errors),
            fmt(r.load, 2),
        ]
        for r in results.idle
    ]
    return table(
        [
            "backend",
            "idle workers",
            "jobs/s",
            "dispatched",
            "wait p50 ms",
            "wait p99 ms",
            "wait max ms",
            "queued p50 / p99 ms (db)",
            "submit p50 ms",
            "server txns/job",
            "SQL stmts/job",
            "server CPU",
            "clients CPU",
            "errors",
            "load",
        ],
        rows,
    )


def depth_table(results: Results) -> str:
    rows = [
        [
            r.backend,
            fmt(r.depth),
            fmt(r.fill_seconds),
            str(r.claims),
            fmt(r.claim_p50_ms),
            fmt(r.claim_p99_ms),
            fmt(r.candidate_query_ms, 2),
            fmt(r.submit_p50_ms),
            "yes" if r.uses_queue_index else "NO",
            str(r.errors),
            fmt(r.load, 2),
        ]
        for r in results.depth
    ]
    return table(
        [
            "backend",
            "queued",
            "fill s",
            "claims",
            "claim p50 ms",
            "claim p99 ms",
            "candidate query ms",
            "submit p50 ms",
            "ix_jobs_queue",
            "errors",
            "load",
        ],
        rows,
    )


@dataclass
class Verdict:
    measure: str
    value: str
    goal: str
    verdict: str
    why: str


def verdicts(results: Results) -> list[Verdict]:
    """Each goal of the issue, met or missed by how much, with the reason the figures give."""
    found = []
    pg = [r for r in results.throughput if r.backend == "postgresql" and r.completed]
    if pg:
        best = max(pg, key=lambda r: r.per_second)
        cpu_total = sum(best.cpu_ms.values())
        ceiling = (os.cpu_count() or 1) * 1000 / max(1e-9, cpu_total - best.cpu_ms["other"])
        met = best.per_second >= GOAL_LIFECYCLES_PER_SECOND
        floor = next(
            (f for f in results.floor if f.backend == "postgresql" and f.variant != "lifecycle"),
            None,
        )
        floor_text = (
            f"; the same database work without HTTP (the floor with the same reads) costs "
            f"{_db_cpu_ms(floor):.1f} ms of CPU per lifecycle, so even with no HTTP layer "
            f"these statements allow at most "
            f"~{(os.cpu_count() or 1) * 1000 / _db_cpu_ms(floor):.0f}/s on {os.cpu_count()} "
            "cores"
            if floor and _db_cpu_ms(floor) > 0
            else ""
        )
        churn = (
            f"; the connection pool opened {best.connects:.2f} new PostgreSQL connections per "
            "lifecycle (more concurrent requests than pooled connections)"
            if best.connects >= 0.05
            else ""
        )
        found.append(
            Verdict(
                "PostgreSQL lifecycles/s (best of 1 and 2 replicas)",
                f"{best.per_second:.0f} ({best.replicas} replica(s))",
                f">= {GOAL_LIFECYCLES_PER_SECOND:.0f}",
                "met"
                if met
                else f"missed: {GOAL_LIFECYCLES_PER_SECOND / best.per_second:.1f}x short",
                f"the server is CPU-bound Python: {best.cpu_ms['server']:.1f} ms of server CPU "
                f"per lifecycle ({best.cpu_ms['server'] / 5:.1f} ms per HTTP request, "
                f"{best.statements:.0f} SQL statements in {best.transactions:.0f} transactions), "
                f"so one server process (one core under the GIL) tops out near "
                f"{1000 / max(1e-9, best.cpu_ms['server']):.0f}/s; with PostgreSQL "
                f"({best.cpu_ms['postgres']:.1f} ms) and the simulated clients "
                f"({best.cpu_ms['clients']:.1f} ms) on the same {os.cpu_count()} cores this "
                f"setup cannot pass about {ceiling:.0f}/s; 500/s needs <= "
                f"{(os.cpu_count() or 1) * 1000 / GOAL_LIFECYCLES_PER_SECOND:.0f} ms of CPU per "
                f"lifecycle, clients included ({best.cpu_ms['other']:.1f} ms per lifecycle went "
                f"to other processes during the run){churn}{floor_text}",
            )
        )
    idle = [r for r in results.idle if r.backend == "postgresql" and r.idle_workers]
    baseline = next(
        (r for r in results.idle if r.backend == "postgresql" and not r.idle_workers), None
    )
    for r in idle:
        met = r.dispatch_p99_ms <= GOAL_IDLE_CLAIM_P99_MS
        skipped = (
            "; jobs sat queued for seconds although a capable worker was waiting: claims from "
            "workers that cannot run them lock the head of the queue (FOR UPDATE SKIP LOCKED) "
            "before the policy rejects them, the capable worker's claim skips the locked jobs, "
            "finds nothing and sleeps until the next wake-up (the 10 s re-check when no new "
            "submit comes)"
            if r.variant == "small" and r.server_wait_p50_ms > 1000
            else ""
        )
        base = (
            f"; without idle workers: p99 {baseline.dispatch_p99_ms:.1f} ms, "
            f"{baseline.transactions_per_job:.0f} transactions per job, "
            f"{100 * baseline.server_cpu:.0f}% of a core, submit {baseline.submit_p50_ms:.0f} ms"
            if baseline
            else ""
        )
        found.append(
            Verdict(
                f"PostgreSQL claim p99 with {r.idle_workers} idle workers ({r.variant})",
                f"{r.dispatch_p99_ms:.1f} ms (p50 {r.dispatch_p50_ms:.1f})",
                f"<= {GOAL_IDLE_CLAIM_P99_MS:.0f} ms",
                "met"
                if met
                else f"missed by {r.dispatch_p99_ms - GOAL_IDLE_CLAIM_P99_MS:.0f} ms "
                f"({r.dispatch_p99_ms / GOAL_IDLE_CLAIM_P99_MS:.1f}x)",
                f"every submit wakes every waiting claim: the server ran "
                f"{r.transactions_per_job:.0f} database transactions per job at {r.rate:g} "
                f"jobs/s, using {100 * r.server_cpu:.0f}% of a core; a submit took "
                f"{r.submit_p50_ms:.0f} ms (p50); by the server's clock jobs stayed queued "
                f"{r.server_wait_p50_ms:.0f} ms p50, {r.server_wait_p99_ms:.0f} ms p99"
                f"{skipped}{base}",
            )
        )
    for backend in BACKENDS:
        levels = sorted((r for r in results.depth if r.backend == backend), key=lambda r: r.depth)
        if len(levels) < 2:
            continue
        low, high = levels[0], levels[-1]
        ratio = high.claim_p50_ms / low.claim_p50_ms
        ratio99 = high.claim_p99_ms / low.claim_p99_ms
        met = ratio <= GOAL_DEPTH_RATIO
        found.append(
            Verdict(
                f"{backend} claim latency at {high.depth:,} vs {low.depth:,} queued",
                f"p50 {ratio:.2f}x, p99 {ratio99:.2f}x",
                f"<= {GOAL_DEPTH_RATIO:.0f}x",
                "met" if met else f"missed: {ratio / GOAL_DEPTH_RATIO:.1f}x over",
                _depth_reason(levels),
            )
        )
    return found


def _depth_reason(levels: list[DepthResult]) -> str:
    """Why claim latency does or does not stay flat, from the candidate query's plans."""
    if not all(r.uses_queue_index for r in levels):
        return "the candidate query does NOT use ix_jobs_queue at some depth"
    sorting = [r for r in levels if "TEMP B-TREE" in r.plan or "Sort" in r.plan]
    times = ", ".join(f"{r.candidate_query_ms:.2f} ms at {r.depth:,}" for r in levels)
    if sorting:
        return (
            "the candidate query finds queued jobs through ix_jobs_queue but sorts all of them "
            "on every claim (the plan shows a sort: the index does not give the queue order), "
            f"so a claim costs O(queued jobs): the query alone takes {times}"
        )
    return f"the candidate query walks ix_jobs_queue in queue order and stops early ({times})"


def _db_cpu_ms(floor: FloorResult) -> float:
    """CPU per lifecycle of the floor's database work: Python plus its PostgreSQL backend."""
    return floor.cpu_ms["python"] + floor.cpu_ms["postgres"]


def summary_table(results: Results) -> str:
    """The goals, then the floor and the HTTP/floor ratios. Wall-clock ratios move with the
    machine's load (the floor and the HTTP runs happen minutes apart); the CPU ratio, HTTP
    server + PostgreSQL CPU per lifecycle over the floor's with the same reads, does not."""
    rows = [[v.measure, v.value, v.goal, v.verdict] for v in verdicts(results)]
    for f in results.floor:
        rows.append(
            [
                f"floor {f.backend} ({f.variant})",
                f"{f.per_second:.0f} lifecycles/s; {1000 / max(1e-9, _db_cpu_ms(f)):.0f} per "
                "CPU-second",
                "",
                "",
            ]
        )
    for r in results.throughput:
        floor = next(
            (f for f in results.floor if f.backend == r.backend and f.variant == "lifecycle"), None
        )
        if floor:
            rows.append(
                [
                    f"HTTP ÷ floor (wall clock), {r.backend}, {r.replicas} replica(s)",
                    f"{r.per_second / floor.per_second:.2f}",
                    "",
                    "",
                ]
            )
        reads = next(
            (f for f in results.floor if f.backend == r.backend and f.variant != "lifecycle"),
            None,
        )
        if reads:
            http_cpu = r.cpu_ms["server"] + r.cpu_ms["postgres"]
            rows.append(
                [
                    f"CPU per lifecycle, HTTP ÷ floor with the same reads, {r.backend}, "
                    f"{r.replicas} replica(s)",
                    f"{http_cpu / max(1e-9, _db_cpu_ms(reads)):.1f}x ({http_cpu:.1f} vs "
                    f"{_db_cpu_ms(reads):.1f} ms)",
                    "",
                    "",
                ]
            )
    return table(["measure", "value", "goal", "verdict"], rows)


def report(results: Results, bench: Bench) -> str:
    parts = []
    if results.throughput:
        parts += ["### Throughput over HTTP", "", throughput_table(results), ""]
    if results.floor:
        parts += ["### Floor: the same lifecycle in-process, no HTTP", "", floor_table(results), ""]
    if results.idle:
        parts += ["### Claims while workers idle in long polls", "", idle_table(results), ""]
    if results.depth:
        parts += ["### Claim latency against a deep queue", "", depth_table(results), ""]
        for r in results.depth:
            parts.append(f"- {r.backend}, {r.depth:,} queued: `{r.plan[:400]}`")
        parts.append("")
    if verdicts(results) or results.floor:
        parts += ["### Summary", "", summary_table(results), ""]
        for v in verdicts(results):
            parts.append(f"- **{v.measure}**: {v.verdict}. {v.why}.")
        parts.append("")
    if bench.profile_summary:
        parts += ["### Server profile (py-spy, PostgreSQL, 1 replica, throughput run)", ""]
        parts += [f"- {line}" for line in bench.profile_summary]
        parts.append("")
    return "\n".join(parts)


def docs_section(results: Results, bench: Bench, context: dict[str, str]) -> str:
    header = [
        SECTION,
        "",
        "Written by `bench/control_plane.py`; numbers from the run below. Simulated workers",
        "claim, heartbeat once, upload a 1-pixel PNG and complete at once (no GPU); submitters",
        "and workers run in the benchmark process, on the same machine as the servers and",
        "PostgreSQL, so the clients' CPU is shown apart. SQLite is the single-machine default;",
        'its "2 replicas" are two server processes on the same database file. The floor runs',
        'the same `JobLifecycle` calls in one thread with no HTTP; "+ HTTP-path reads" adds',
        "the reads the routes make around them (API-key lookup per request and so on). SQL",
        "statements and transactions are counted inside the server processes (BEGIN and",
        "COMMIT not included in statements; on PostgreSQL each transaction also costs a",
        "pool pre-ping, BEGIN and COMMIT round trip). Claim latency in the throughput and",
        "depth parts is the claim request's round trip, for claims that got a job (in the",
        "throughput part it includes long-poll waits whenever the queue ran dry). In the idle",
        'part, "wait" is how long a job waited for a worker: from its submit being sent to a',
        "claim's answer carrying it (the workers are idle, waiting in long polls, so this is",
        "how fast the fleet picks up new work; it includes the submit's own handling);",
        "\"queued (db)\" is the server's view: the claim's start minus the submit's start",
        "(started_at - created_at), which no client-side delay inflates.",
        "",
        f"- command: `{context['command']}`",
        f"- date: {context['date']}",
        f"- machine: {context['cpu']}, {os.cpu_count()} cores; {context['postgres']}",
        f"- load average at start: {context['load']} ({context['quiet']})",
        "",
    ]
    return "\n".join(header) + "\n" + report(results, bench)


NOTES = "### Notes"


def write_docs(section: str) -> None:
    """Puts the section into docs/benchmarks.md: replaces an earlier "## Control plane"
    section in place, or appends it; the rest of the file belongs to others and is read again
    right before writing so that their concurrent changes survive. A hand-written "### Notes"
    subsection at the end of the old section (analysis, fixes tried) is kept."""
    section = section.rstrip() + "\n"
    current = DOCS.read_text() if DOCS.exists() else ""
    if not current:
        DOCS.write_text("# Benchmarks\n\n" + section)
        return
    start = current.find(SECTION + "\n")
    if start == -1:
        DOCS.write_text(current.rstrip() + "\n\n" + section)
        return
    end = current.find("\n## ", start + len(SECTION))
    old = current[start : end + 1] if end != -1 else current[start:]
    rest = current[end + 1 :] if end != -1 else ""
    notes = old.find("\n" + NOTES)
    if notes != -1:
        section += old[notes:].rstrip() + "\n"
    DOCS.write_text(current[:start] + section + ("\n" + rest if rest else ""))


# --- command line ------------------------------------------------------------------------------


def csv_ints(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v]


def csv_words(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "part", choices=("throughput", "floor", "idle", "depth", "all"), help="What to measure."
    )
    parser.add_argument("--backends", type=csv_words, default=list(BACKENDS))
    parser.add_argument("--replicas", type=csv_ints, default=[1, 2], help="For throughput.")
    parser.add_argument("--jobs", type=int, default=1000, help="Throughput: measured jobs.")
    parser.add_argument("--workers", type=int, default=16, help="Throughput: simulated workers.")
    parser.add_argument("--submitters", type=int, default=4, help="Throughput: submit threads.")
    parser.add_argument("--warmup", type=int, default=50, help="Unmeasured lifecycles first.")
    parser.add_argument("--floor-jobs", type=int, default=2000, help="Floor: lifecycles at most.")
    parser.add_argument("--floor-seconds", type=float, default=15.0, help="Floor: time bound.")
    parser.add_argument("--idle-workers", type=int, default=100)
    parser.add_argument(
        "--idle-variants",
        type=csv_words,
        default=["none", "same", "small"],
        help="none: baseline; same: idle workers could take the jobs too; other: they serve "
        "another job kind; small: they see the jobs but are too small for them.",
    )
    parser.add_argument("--idle-backends", type=csv_words, default=["postgresql", "sqlite"])
    parser.add_argument("--idle-rate", type=float, default=10.0, help="Idle: submits per second.")
    parser.add_argument("--idle-seconds", type=float, default=12.0, help="Idle: submitting time.")
    parser.add_argument("--idle-wait", type=float, default=10.0, help="Idle: long-poll seconds.")
    parser.add_argument("--idle-settle", type=float, default=3.0, help="Idle: seconds to settle.")
    parser.add_argument(
        "--depths", type=csv_ints, default=[1000, 100_000, 1_000_000], help="PostgreSQL depths."
    )
    parser.add_argument(
        "--sqlite-depths", type=csv_ints, default=[1000, 100_000, 1_000_000], help="SQLite."
    )
    parser.add_argument("--depth-claims", type=int, default=200, help="Depth: measured claims.")
    parser.add_argument(
        "--depth-seconds", type=float, default=30.0, help="Depth: time bound on the claims."
    )
    parser.add_argument("--depth-submits", type=int, default=30, help="Depth: timed submits.")
    parser.add_argument("--fill-timeout", type=float, default=300.0, help="Depth: fill bound.")
    parser.add_argument("--run-timeout", type=float, default=240.0, help="Bound on each run.")
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="Wait this long at most for load < 1."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile a PostgreSQL server with py-spy in an extra throughput run.",
    )
    parser.add_argument("--profile-out", type=Path, default=None, help="Keep py-spy's raw data.")
    parser.add_argument("--json", type=Path, default=None, help="Also write raw figures here.")
    parser.add_argument("--write-docs", action="store_true", help="Update docs/benchmarks.md.")
    args = parser.parse_args(argv)
    unknown = [b for b in [*args.backends, *args.idle_backends] if b not in BACKENDS]
    unknown += [v for v in args.idle_variants if v not in IDLE_VARIANTS]
    if unknown:
        parser.error(f"unknown backend or idle variant: {', '.join(unknown)}")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, through every clean-up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A shell's background job inherits SIGINT ignored; Ctrl-C and kill -INT must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join([".venv/bin/python", "bench/control_plane.py", *sys.argv[1:]])
    load, waited = wait_for_quiet(args.quiet_wait)
    context = {
        "command": command,
        "date": datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "cpu": cpu_model(),
        "postgres": "",
        "load": f"{load:.2f}",
        "quiet": "quiet" if load < 1.0 else f"never under 1.0 after waiting {waited:.0f}s",
    }
    say(f"load average {load:.2f}; scratch under {tempfile.gettempdir()}")
    bench = Bench(args)
    results = Results()
    part = args.part
    try:
        if "postgresql" in [*args.backends, *args.idle_backends]:
            with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                context["postgres"] = f"PostgreSQL {row[0] if row else '?'} on the same machine"
        if part in ("floor", "all"):
            for backend in args.backends:
                results.floor.append(run_floor(bench, backend, with_reads=False))
                results.floor.append(run_floor(bench, backend, with_reads=True))
        if part in ("throughput", "all"):
            for backend in args.backends:
                for replicas in args.replicas:
                    results.throughput.append(run_throughput(bench, backend, replicas))
                    say(throughput_table(Results(throughput=results.throughput[-1:])))
            if args.profile and "postgresql" in args.backends:
                profiled = run_throughput(bench, "postgresql", 1, profile=True)
                say(f"profiled run (not reported): {profiled.per_second:.1f} lifecycles/s")
        if part in ("idle", "all"):
            for backend in args.idle_backends:
                for variant in args.idle_variants:
                    results.idle.append(run_idle(bench, backend, variant))
                    say(idle_table(Results(idle=results.idle[-1:])))
        if part in ("depth", "all"):
            for backend in args.backends:
                depths = args.depths if backend == "postgresql" else args.sqlite_depths
                if depths:
                    results.depth.extend(run_depth(bench, backend, depths))
    except KeyboardInterrupt:
        say("interrupted: stopping everything started here")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        bench.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    text_report = report(results, bench)
    say("\n" + text_report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "context": context,
                    **{k: [vars(r) for r in v] for k, v in vars(results).items()},
                },
                indent=2,
                default=str,
            )
        )
    if args.write_docs:
        write_docs(docs_section(results, bench, context))
        say(f"wrote the {SECTION!r} section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
