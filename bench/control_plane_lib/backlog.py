"""Part 5: a hub at its peak, with a backlog. The jobs are queued first (not timed); then the
simulated workers drain them, once claiming with a call of their own after each completion
and once sending the next claim with the completion (`next`, as the real worker does), on
the same database and server. Lifecycles/s here is the workers' side alone (claim,
heartbeat, complete): what a queue that never runs dry costs the control plane per job."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.report import fmt, say, table
from bench.control_plane_lib.counting import read_counts
from bench.control_plane_lib.cpu import CpuMeter
from bench.control_plane_lib.stack import Bench, BenchDatabase
from tests.harness.orchestrator import OrchestratorProcess
from tests.load import LoadLog, simulated_worker, submit_jobs

MODES = ("plain claims", "next with the completion")
MODE_NAMES = {"plain": MODES[0], "next": MODES[1]}  # as --backlog-modes names them


@dataclass
class BacklogResult:
    backend: str
    mode: str
    jobs: int
    workers: int
    completed: int
    seconds: float
    claim_calls: float  # per job
    following_share: float  # jobs handed out by the previous completion
    statements: float  # per job, the server's
    transactions: float
    server_cpu_ms: float  # per job
    errors: int
    first_error: str
    load: float

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def run_backlog(bench: Bench, backend: str) -> list[BacklogResult]:
    """Both modes on one database and server, plain first, each on a backlog of its own."""
    args = bench.args
    bench_db = bench.fresh(backend)
    servers, counts_dir = bench.serve(bench_db, 1)
    urls = [s.url for s in servers]
    results: list[BacklogResult] = []
    try:
        for mode in [MODE_NAMES[name] for name in args.backlog_modes]:
            say(f"backlog: {backend}, {args.backlog_jobs} jobs queued, {mode}")
            submit_jobs(urls, bench_db.client_token, args.backlog_jobs)
            time.sleep(0.5)
            results.append(_drain(bench, bench_db, mode, servers, counts_dir))
    finally:
        bench.stop(servers)
    return results


def _drain(
    bench: Bench,
    bench_db: BenchDatabase,
    mode: str,
    servers: list[OrchestratorProcess],
    counts_dir: Path,
) -> BacklogResult:
    """The workers drain the queued jobs; the server's SQL and CPU meanwhile."""
    args = bench.args
    urls = [s.url for s in servers]
    jobs = args.backlog_jobs
    log = LoadLog()
    stop = threading.Event()

    def done() -> bool:
        return stop.is_set() or log.completed >= jobs

    threads = [
        threading.Thread(
            target=simulated_worker,
            args=(f"b{i}", urls, bench_db.worker_token, log, done),
            kwargs={
                "deadline_seconds": args.run_timeout,
                "inline": True,
                "follow": mode == MODES[1],
            },
            daemon=True,
        )
        for i in range(args.workers)
    ]
    before = read_counts(counts_dir)
    load = os.getloadavg()[0]
    meter = CpuMeter([s.process.pid for s in servers if s.process], bench_db.pg_name)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.run_timeout
    try:
        while log.completed < jobs and time.monotonic() < deadline:
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        bench.threads.extend(t for t in threads if t.is_alive())
    used, _ = meter.stop()
    time.sleep(0.6)
    counts = read_counts(counts_dir)
    counts.subtract(before)
    finished = max(1, log.completed)
    following = sum(c.following for c in log.claims)
    return BacklogResult(
        backend=bench_db.backend,
        mode=mode,
        jobs=jobs,
        workers=args.workers,
        completed=log.completed,
        seconds=seconds,
        claim_calls=(len(log.claims) - following) / finished,
        following_share=following / max(1, len(log.claims)),
        statements=counts["statements"] / finished,
        transactions=counts["transactions"] / finished,
        server_cpu_ms=used.server * 1000 / finished,
        errors=len(log.errors),
        first_error=log.errors[0][:200] if log.errors else "",
        load=load,
    )


def backlog_table(results: list[BacklogResult]) -> str:
    plain = {r.backend: r for r in results if r.mode == MODES[0]}
    rows = []
    for r in results:
        base = plain.get(r.backend)
        ratio = r.per_second / base.per_second if base and base.per_second else None
        rows.append(
            [
                r.backend,
                r.mode,
                f"{r.completed}/{r.jobs}",
                fmt(r.per_second),
                fmt(ratio, 2) if ratio is not None and r is not base else "-",
                fmt(r.claim_calls, 2),
                f"{100 * r.following_share:.0f}%",
                fmt(r.statements),
                fmt(r.transactions),
                fmt(r.server_cpu_ms),
                str(r.errors),
                fmt(r.load, 2),
            ]
        )
    return table(
        [
            "backend",
            "workers' next claim",
            "done",
            "lifecycles/s",
            "÷ plain",
            "claim calls/job",
            "jobs via completions",
            "SQL stmts/job",
            "txns/job",
            "server CPU ms/job",
            "errors",
            "load",
        ],
        rows,
    )
