"""Part 2: the floor, the same lifecycle in-process on the database with no HTTP, one thread."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common.report import percentile, say
from bench.control_plane_lib.counting import StatementCounter
from bench.control_plane_lib.cpu import CpuMeter
from bench.control_plane_lib.stack import (
    Bench,
)
from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.keys import authenticate
from imagefleet.worker_protocol import (
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    HeartbeatRequest,
)
from tests.load import PARAMS, TINY_PNG

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
    bench_db = bench.fresh(backend)
    db = Database(bench_db.url)
    settings = Settings(
        data_dir=bench.scratch / f"floor-{bench.serial}",
        database_url=bench_db.url,
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
            authenticate_as(bench_db.client_token)
        row, _ = step("submit", lambda: lifecycle.submit(bench_db.client, job))
        if with_reads:

            def view() -> None:
                with db.read() as conn:
                    lifecycle.outputs(conn, [row.id])

            step("submit", view)
            authenticate_as(bench_db.worker_token)
        started = time.perf_counter()
        assignment = step("claim", lambda: lifecycle.claim(bench_db.worker, claim))
        if measured:
            claim_ms.append((time.perf_counter() - started) * 1000)
        assert assignment is not None and assignment.job_id == row.id
        attempt = assignment.attempt_id
        if with_reads:
            authenticate_as(bench_db.worker_token)
        step("heartbeat", lambda: lifecycle.heartbeat(bench_db.worker, attempt, beat))
        if with_reads:
            authenticate_as(bench_db.worker_token)
            step("upload", lambda: lifecycle.check_current(bench_db.worker, attempt))
        step(
            "upload",
            lambda: lifecycle.record_upload(
                bench_db.worker,
                attempt,
                index=0,
                key=f"jobs/{row.id}/{attempt}/0.png",
                size=len(TINY_PNG),
                sha256="0" * 64,
                content_type="image/png",
            ),
        )
        if with_reads:
            authenticate_as(bench_db.worker_token)
        step("complete", lambda: lifecycle.complete(bench_db.worker, attempt, finish))

    try:
        for _ in range(args.warmup):
            one(measured=False)
        per_step.clear()
        before = counter.snapshot()
        load = os.getloadavg()[0]
        meter = CpuMeter([], bench_db.pg_name)
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
