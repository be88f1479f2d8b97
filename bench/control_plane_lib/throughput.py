"""Part 1: lifecycles per second over HTTP, with simulated workers and submitters against real
server processes."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from bench.common.report import percentile, say
from bench.control_plane_lib.bare import BareResult, run_bare
from bench.control_plane_lib.counting import read_counts
from bench.control_plane_lib.cpu import CpuMeter
from bench.control_plane_lib.profile import finish_profile, start_profile
from bench.control_plane_lib.stack import (
    Bench,
    BenchDatabase,
)
from tests.load import LoadLog, simulated_worker, submit_jobs


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
    bare: BareResult | None = None  # the bare-SQL floor, same database and concurrency
    # Jobs handed out by the completion before (its `next`) rather than by a claim call.
    following_share: float = 0.0
    follow: bool = True  # the workers sent their next claim with each completion

    @property
    def bare_ratio(self) -> float | None:
        """The headline: HTTP lifecycles/s over the bare-SQL floor's, measured in this run."""
        if self.bare is None or not self.bare.per_second:
            return None
        return self.per_second / self.bare.per_second

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def _drive(
    bench: Bench,
    bench_db: BenchDatabase,
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
            submit_jobs(urls, bench_db.client_token, jobs, threads=submitters)
        except Exception as exc:
            submit_errors.append(str(exc))

    def done() -> bool:
        return stop.is_set() or log.completed >= jobs

    threads = [
        threading.Thread(
            target=simulated_worker,
            args=(f"w{i}", urls[i % len(urls) :] + urls[: i % len(urls)], bench_db.worker_token),
            # Like the real worker with a 1-pixel output: upload-and-complete in one call, the
            # next claim sent with it (unless --plain-claims).
            kwargs={
                "log": log,
                "done": done,
                "deadline_seconds": timeout,
                "inline": True,
                "follow": not bench.args.plain_claims,
            },
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
    bench_db = bench.fresh(backend)
    servers, counts_dir = bench.serve(bench_db, replicas)
    urls = [s.url for s in servers]
    try:
        if args.warmup:
            _drive(
                bench, bench_db, urls, args.warmup, args.workers, args.submitters, args.run_timeout
            )
        # Right before the HTTP run, on the same database with as many connections as the
        # HTTP run has clients: the floor the headline ratio divides by.
        bare = run_bare(bench, bench_db, args.jobs, args.run_timeout)
        say(f"bare-SQL floor: {bare.per_second:.0f} lifecycles/s ({bare.errors} errors)")
        time.sleep(0.5)
        counts_before = read_counts(counts_dir)
        spy = start_profile(bench, servers[0]) if profile else None
        load = os.getloadavg()[0]
        meter = CpuMeter([s.process.pid for s in servers if s.process], bench_db.pg_name)
        log, seconds, submit_errors = _drive(
            bench, bench_db, urls, args.jobs, args.workers, args.submitters, args.run_timeout
        )
        used, wall = meter.stop()
        if spy:
            finish_profile(bench, spy)
        time.sleep(0.6)
        counts = read_counts(counts_dir)
        counts.subtract(counts_before)
    finally:
        bench.stop(servers)
    # Claim latency is the claim calls' round trips; a job a completion handed out waited for
    # no call of its own.
    claims = [c.claim_seconds * 1000 for c in log.claims if not c.following]
    following = sum(c.following for c in log.claims)
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
        bare=bare,
        following_share=following / max(1, len(log.claims)),
        follow=not args.plain_claims,
    )
