"""Claim latency of the model-aware claim path against a deep, hub-shaped queue, on SQLite and
PostgreSQL: does a claim cost the same with 1,000 and 1,000,000 jobs queued?

The queue is filled with SQL straight into `jobs` and `job_models` (the API would take far too
long for a million jobs): 200 checkpoints with Zipf-like popularity, two tiers (10% paid), one
batch client owning 90% of the jobs and 50 ordinary clients. Claims go through the real
`JobLifecycle.claim` in-process (no HTTP: the figure is the claim path itself) by workers that
hold a popular combo on the GPU and 20 checkpoints on disk, so every probe of the preselection
runs (queue head per tier, owners, resident combo, resident and cached checkpoints). Each
claimed job is completed at once so the running set stays small. A baseline is measured in the
same run: the claim at the smallest depth; the table reports each depth's p50 against it.

    .venv/bin/python bench/claim_depth.py --depths 1000,100000,1000000
    .venv/bin/python bench/claim_depth.py --backends sqlite --depths 1000,10000 --claims 100

Everything created here (databases, scratch directories) is removed on exit.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.common.report import fmt, percentile, say, table  # noqa: E402
from imagefleet.config import Settings  # noqa: E402
from imagefleet.orchestrator.lifecycle import JobLifecycle  # noqa: E402
from imagefleet.protocol import (  # noqa: E402
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    WorkerCapabilities,
)
from imagefleet.store.database import Database  # noqa: E402
from imagefleet.store.keys import ApiKey, create_key  # noqa: E402
from imagefleet.store.models import register_model  # noqa: E402

PG_ADMIN_URL = os.environ.get("IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHECKPOINTS = 200
OWNERS = 50
PARAMS = '{{"prompt": "x", "model": "{}", "width": 512, "height": 512, "steps": 20, "seed": 1}}'


def combo_of(sha256: str) -> str:
    return hashlib.sha256(f"checkpoint:{sha256}".encode()).hexdigest()


def setup(url: str) -> tuple[Database, ApiKey, list[str], list[tuple[int, str]]]:
    db = Database(url)
    db.upgrade()
    owners = []
    with db.write() as conn:
        worker, _ = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        for i in range(OWNERS + 1):
            tier = "paid" if i % 10 == 1 else "free"
            key, _ = create_key(conn, name=f"c{i}", scope="client", tier=tier, now=1.0)
            owners.append(key.id)
        models = []
        for i in range(CHECKPOINTS):
            sha = hashlib.sha256(f"ckpt-{i}".encode()).hexdigest()
            model = register_model(
                conn,
                name=f"ckpt{i}",
                kind="checkpoint",
                source=f"/m/{i}",
                sha256=sha,
                size_bytes=2_000_000_000,
                now=1.0,
            )
            models.append((model.id, sha))
    return db, worker, owners, models


def fill(db: Database, owners: list[str], models: list[tuple[int, str]], count: int) -> None:
    """Adds `count` queued jobs in chunks: owner 0 is the batch (90%), checkpoint i is picked
    with probability about 1/(i+1) (Zipf-like, by squaring a uniform index)."""
    rng = secrets.SystemRandom()
    base = time.time() - 3000
    left = count
    while left:
        chunk = min(left, 50_000)
        jobs, links = [], []
        for _ in range(chunk):
            job_id = secrets.token_hex(16)
            owner = owners[0] if rng.random() < 0.9 else rng.choice(owners[1:])
            paid = owner in owners[1::10]
            index = min(CHECKPOINTS - 1, int(CHECKPOINTS * rng.random() ** 3))
            model_id, sha = models[index]
            jobs.append(
                {
                    "id": job_id,
                    "owner": owner,
                    "tier": "paid" if paid else "free",
                    "priority": 10 if paid else 0,
                    "model_id": model_id,
                    "combo": combo_of(sha),
                    "created": base + rng.random() * 2000,
                    "params": PARAMS.format(f"ckpt{index}"),
                }
            )
            links.append({"job": job_id, "model_id": model_id, "sha": sha})
        with db.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_key_id, tier, kind, status, priority, params, "
                    "model_id, pixels, created_at, progress_step, progress_total, attempts, "
                    "max_attempts, allow_same_node, combo_key, cost_units) VALUES (:id, :owner, "
                    ":tier, 'txt2img', 'queued', :priority, :params, :model_id, 262144, "
                    ":created, 0, 0, 0, 3, false, :combo, 5.2)"
                ),
                jobs,
            )
            conn.execute(
                text(
                    "INSERT INTO job_models (job_id, position, role, model_id, sha256) "
                    "VALUES (:job, 0, 'checkpoint', :model_id, :sha)"
                ),
                links,
            )
        left -= chunk


def claims(
    lifecycle: JobLifecycle, worker: ApiKey, models: list[tuple[int, str]], count: int
) -> list[float]:
    """Claim latencies (ms) of `count` claims by 8 workers in turn, each job completed at once."""
    timings = []
    for i in range(count):
        sha = models[i % 8][1]
        request = ClaimRequest(
            worker_id=f"w{i % 8}",
            node_id=f"n{i % 8}",
            capabilities=WorkerCapabilities(vram_mb=24_000),
            resident_combos=[combo_of(sha)],
            resident_models=[sha],
            cached_models=[m[1] for m in models[i % 8 : i % 8 + 20]],
        )
        started = time.perf_counter()
        assignment = lifecycle.claim(worker, request)
        timings.append((time.perf_counter() - started) * 1000)
        if assignment is None:
            continue
        lifecycle.record_upload(
            worker,
            assignment.attempt_id,
            index=0,
            key=f"jobs/{assignment.job_id}/{assignment.attempt_id}/0.png",
            size=10,
            sha256="0" * 64,
            content_type="image/png",
        )
        lifecycle.complete(
            worker,
            assignment.attempt_id,
            CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=512, height=512)]),
        )
    return timings


def run(backend: str, depths: list[int], count: int, scratch: Path) -> list[list[str]]:
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite:///{scratch / 'claims.db'}"
    else:
        pg_name = f"imagefleet_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {pg_name}")
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{pg_name}"
    rows: list[list[str]] = []
    db, worker, owners, models = setup(url)
    try:
        settings = Settings(data_dir=scratch / backend, database_url=url)
        lifecycle = JobLifecycle(db, settings)
        baseline: float | None = None
        queued = 0
        for depth in sorted(depths):
            say(f"{backend}: filling to {depth:,} queued jobs")
            started = time.perf_counter()
            fill(db, owners, models, depth - queued)
            queued = depth
            if backend == "postgresql":
                with db.write() as conn:
                    conn.execute(text("ANALYZE jobs"))
                    conn.execute(text("ANALYZE job_models"))
            filled = time.perf_counter() - started
            claims(lifecycle, worker, models, 10)  # warm caches
            timings = claims(lifecycle, worker, models, count)
            queued -= count + 10
            p50 = percentile(timings, 50)
            baseline = baseline or p50
            load = os.getloadavg()[0]
            rows.append(
                [
                    backend,
                    f"{depth:,}",
                    fmt(filled, 0),
                    str(len(timings)),
                    fmt(p50, 2),
                    fmt(percentile(timings, 99), 2),
                    fmt(p50 / baseline, 2),
                    fmt(load, 1),
                ]
            )
            say(f"  claim p50 {fmt(p50, 2)} ms, p99 {fmt(percentile(timings, 99), 2)} ms")
    finally:
        db.dispose()
        if pg_name:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--depths", default="1000,100000,1000000")
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    depths = [int(d.replace("_", "")) for d in args.depths.split(",") if d]
    scratch = Path(tempfile.mkdtemp(prefix="imagefleet-claims-"))
    rows: list[list[str]] = []
    try:
        for backend in args.backends.split(","):
            rows.extend(run(backend.strip(), depths, args.claims, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    headers = ["backend", "queued", "fill s", "claims", "p50 ms", "p99 ms", "p50 / first", "load"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
