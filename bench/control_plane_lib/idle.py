"""Part 3: how fast a new job reaches a worker while many idle workers long-poll."""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from bench.common.report import percentile, say
from bench.control_plane_lib.counting import read_counts
from bench.control_plane_lib.cpu import CpuMeter
from bench.control_plane_lib.stack import (
    Bench,
    BenchDatabase,
)
from imagefleet.store.database import Database
from imagefleet.store.tables import jobs as jobs_table
from tests.load import PARAMS, TINY_PNG_BASE64

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
    bench_db: BenchDatabase, url: str, idle: int, capabilities: dict[str, Any] | None, bench: Bench
) -> tuple[_IdleLog, float]:
    """One active worker, `idle` idle ones and a submitter at a fixed rate, all in one event
    loop (cheap on the CPU the servers need). Returns the log and the measured seconds."""
    args = bench.args
    log = _IdleLog()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=idle + 8, max_keepalive_connections=idle + 8)
    worker_headers = {"Authorization": f"Bearer {bench_db.worker_token}"}
    client_headers = {"Authorization": f"Bearer {bench_db.client_token}"}

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
                # Upload-and-complete in one call, as the real worker does for small outputs.
                output = {"index": 0, "seed": 0, "width": 64, "height": 64}
                output = {**output, "data_base64": TINY_PNG_BASE64}
                done = await http.post(f"{prefix}/complete-inline", json={"outputs": [output]})
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


def server_waits(bench_db: BenchDatabase, job_ids: list[str]) -> list[float]:
    """How long each job stayed queued by the server's own clock (claim time minus submit
    time, in ms): a check on the client-side figure that no client delay can inflate."""
    if not job_ids:
        return []
    db = Database(bench_db.url)
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
    bench_db = bench.fresh(backend)
    servers, counts_dir = bench.serve(bench_db, 1)
    try:
        counts_before = read_counts(counts_dir)
        load = os.getloadavg()[0]
        meter = CpuMeter([s.process.pid for s in servers if s.process], bench_db.pg_name)
        log, seconds = asyncio.run(
            _idle_session(bench_db, servers[0].url, idle, capabilities, bench)
        )
        used, _ = meter.stop()
        time.sleep(0.6)
        counts = read_counts(counts_dir)
        counts.subtract(counts_before)
        queued_for = server_waits(bench_db, list(log.submitted))
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
