"""Part 4: claim latency against a deep queue (filled with SQL), and the candidate query's plan."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from bench.common.report import fmt, percentile, say
from bench.control_plane_lib.stack import (
    Bench,
    BenchDatabase,
)
from imagefleet.config import Settings
from imagefleet.orchestrator.claim_policy import policy_for
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store import claim_probes as probe_sql
from imagefleet.store.database import Database
from tests.load import PARAMS, LoadLog, simulated_worker


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


def _fill(bench_db: BenchDatabase, template_id: str, count: int, deadline: float) -> None:
    """Adds `count` queued copies of the template job with SQL straight into the table: the
    API would take far too long for a million jobs. Committed in chunks, so that Ctrl-C and
    the time bound land between them."""
    db = Database(bench_db.url)
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
    if bench_db.backend == "postgresql":
        # What autovacuum does soon after a bulk insert anyway: fresh statistics for the planner.
        with psycopg.connect(_libpq(bench_db.url), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) jobs")


def _libpq(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def queued_count(bench_db: BenchDatabase) -> int:
    db = Database(bench_db.url)
    try:
        with db.read() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'")).scalar_one()
            )
    finally:
        db.dispose()


def candidate_plan(bench_db: BenchDatabase) -> tuple[str, bool, float]:
    """EXPLAIN of the claim's candidate query, captured as the store really sends it (so this
    stays true when the query changes): the plan, whether it walks ix_jobs_queue, and its
    execution time where the database reports one."""
    db = Database(bench_db.url)
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "ORDER BY jobs.priority DESC" in statement and not captured:  # the head probe
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        with db.read() as conn:
            probe_sql.look(
                conn,
                claim_sql.WorkerLimits("bench-node", ["txt2img"], 1 << 30, 0),
                policy_for(Settings()).selection,
                claim_sql.Probes(),
                time.time(),
            )
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


def _claims(bench_db: BenchDatabase, url: str, count: int, timeout: float) -> LoadLog:
    """`count` sequential claim-upload-complete rounds by one simulated worker, no waiting,
    or fewer when `timeout` runs out (a claim that scans the whole queue can take a second)."""
    log = LoadLog()
    simulated_worker(
        "depth",
        [url],
        bench_db.worker_token,
        log,
        lambda: log.completed >= count or len(log.errors) > 10,
        wait_seconds=0.0,
        deadline_seconds=timeout,
    )
    return log


def run_depth(bench: Bench, backend: str, depths: list[int]) -> list[DepthResult]:
    args = bench.args
    bench_db = bench.fresh(backend)
    # One key owns the whole queue here, so its queued-jobs limit must be out of the way.
    servers, _ = bench.serve(bench_db, 1, env={"IMAGEFLEET_MAX_QUEUED_PER_KEY": "100000000"})
    url = servers[0].url
    results = []
    try:
        headers = {"Authorization": f"Bearer {bench_db.client_token}"}
        with httpx.Client(headers=headers, timeout=60) as http:
            response = http.post(f"{url}/v1/jobs", json={"kind": "txt2img", "params": PARAMS})
            response.raise_for_status()
            template = response.json()["id"]
            for depth in sorted(depths):
                say(f"depth: {backend}, filling to {depth:,} queued jobs")
                started = time.perf_counter()
                missing = depth - queued_count(bench_db)
                if missing > 0:
                    _fill(bench_db, template, missing, time.monotonic() + args.fill_timeout)
                fill_seconds = time.perf_counter() - started
                plan, uses_index, query_ms = candidate_plan(bench_db)
                load = os.getloadavg()[0]
                warm = _claims(bench_db, url, 20, args.depth_seconds / 4)
                log = _claims(bench_db, url, args.depth_claims, args.depth_seconds)
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
