"""The scheduling policies through the real claim path: simulated workers (no GPU) claim from the
real `JobLifecycle` on SQLite, in virtual time, on hub-shaped traffic. Does the ordering of
policies the fleet simulator shows (docs/benchmarks.md, "Scheduling policies on the simulated
fleet") hold when the candidates come from the SQL preselection and every claim is a real
transaction?

Each policy runs the same seeded workload on a fresh database: Poisson arrivals at 80% of the
fleet's generation capacity, checkpoints drawn with Zipf popularity (exponent 1.1 over 100
checkpoints of 2 to 6.5 GB; no LoRAs), 30% paid jobs, one batch client with 30% of the jobs
submitted in bursts. Workers (8 RTX 4090-like: 1 GB/s downloads, 2 s + size / 1.5 GB/s loads, one
combo resident, 10 checkpoints of disk cache, LRU) report what they hold with every claim; a
claimed job's setup (download, load) and generation take virtual time, then the worker completes
it through the lifecycle and claims again. Idle workers claim again at the next arrival.

    .venv/bin/python bench/claim_policies.py                   # 1,500 jobs, 3 policies
    .venv/bin/python bench/claim_policies.py --jobs 500 --policies model-aware,fifo
"""

from __future__ import annotations

import argparse
import heapq
import random
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common.report import fmt, percentile, say, table  # noqa: E402
from imagefleet.config import Settings  # noqa: E402
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams  # noqa: E402
from imagefleet.orchestrator.lifecycle import JobLifecycle  # noqa: E402
from imagefleet.store.database import Database  # noqa: E402
from imagefleet.store.keys import ApiKey, create_key  # noqa: E402
from imagefleet.store.models import register_model  # noqa: E402
from imagefleet.worker_protocol import (  # noqa: E402
    Assignment,
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    WorkerCapabilities,
)

CHECKPOINTS = 100
WORKERS = 8
DISK_SLOTS = 10
BANDWIDTH = 1e9
DISK_TO_GPU = 1.5e9
LOAD_FIXED = 2.0
GEN_SECONDS = 4.0  # one 512x512 20-step image on the simulated GPU


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Worker:
    name: str
    resident: str | None = None  # checkpoint sha on the GPU
    combo: str | None = None
    disk: OrderedDict[str, None] = field(default_factory=OrderedDict)
    job: Assignment | None = None
    generating = 0.0
    loading = 0.0
    downloading = 0.0


@dataclass
class Arrival:
    at: float
    owner: int  # 0 ordinary free, 1 ordinary paid, 2 batch (free)
    checkpoint: int


def workload(jobs: int, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 1.1 for i in range(CHECKPOINTS)]
    rate = 0.8 * WORKERS / GEN_SECONDS
    arrivals, now = [], 0.0
    batch_left = 0
    while len(arrivals) < jobs:
        now += rng.expovariate(rate)
        if batch_left == 0 and rng.random() < 0.006:
            batch_left = 60
            batch_model = rng.choices(range(CHECKPOINTS), weights)[0]
        if batch_left:
            batch_left -= 1
            arrivals.append(Arrival(now, 2, batch_model))
            continue
        owner = 1 if rng.random() < 0.3 else 0
        arrivals.append(Arrival(now, owner, rng.choices(range(CHECKPOINTS), weights)[0]))
    return arrivals


def sizes(seed: int) -> list[int]:
    rng = random.Random(seed + 1)
    return [int(rng.uniform(2e9, 6.5e9)) for _ in range(CHECKPOINTS)]


def run(policy: str, arrivals: list[Arrival], seed: int, scratch: Path) -> dict[str, float]:
    url = f"sqlite:///{scratch / f'{policy}.db'}"
    db = Database(url)
    db.upgrade()
    model_sizes = sizes(seed)
    shas = [f"{i:064x}" for i in range(CHECKPOINTS)]
    with db.write() as conn:
        owners = [
            create_key(conn, name=name, scope="client", tier=tier, now=1.0)[0]
            for name, tier in (("free", "free"), ("paid", "paid"), ("batch", "free"))
        ]
        worker_key, _ = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        for i in range(CHECKPOINTS):
            register_model(
                conn,
                name=f"ckpt{i}",
                kind="checkpoint",
                source=f"/m/{i}",
                sha256=shas[i],
                size_bytes=model_sizes[i],
                now=1.0,
            )
    clock = Clock()
    settings = Settings(
        data_dir=scratch / policy,
        database_url=url,
        policy=policy,  # type: ignore[arg-type]
        max_queued_per_key=1_000_000,
        lease_seconds=3600,
    )
    lifecycle = JobLifecycle(db, settings, clock=clock)
    rng = random.Random(seed + 2)
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    for worker in workers:  # caches start warm with popular checkpoints
        for index in rng.sample(range(20), DISK_SLOTS // 2):
            worker.disk[shas[index]] = None
    start = clock.now
    waits: dict[int, list[float]] = {0: [], 1: [], 2: []}
    loads = 0
    events: list[tuple[float, int, int]] = []  # (time, order, worker index); order breaks ties
    counter = 0
    idle = set(range(WORKERS))
    owner_of: dict[str, int] = {}
    pending = list(reversed(arrivals))
    done = 0
    claim_ms: list[float] = []

    def claim(index: int) -> None:
        nonlocal counter, loads
        worker = workers[index]
        request = ClaimRequest(
            worker_id=worker.name,
            node_id=worker.name,
            capabilities=WorkerCapabilities(gpu_name="RTX 4090", vram_mb=24_000),
            resident_combos=[worker.combo] if worker.combo else [],
            resident_models=[worker.resident] if worker.resident else [],
            cached_models=list(worker.disk),
            download_bytes_per_s=BANDWIDTH,
        )
        began = time.perf_counter()
        assignment = lifecycle.claim(worker_key, request)
        claim_ms.append((time.perf_counter() - began) * 1000)
        if assignment is None:
            idle.add(index)
            return
        idle.discard(index)
        model = assignment.models[0]
        setup = 0.0
        if model.sha256 != worker.resident:
            if model.sha256 not in worker.disk:
                worker.downloading += model.size_bytes / BANDWIDTH
                setup += model.size_bytes / BANDWIDTH
                worker.disk[model.sha256] = None
                while len(worker.disk) > DISK_SLOTS:
                    worker.disk.popitem(last=False)
            worker.disk.move_to_end(model.sha256)
            load = LOAD_FIXED + model.size_bytes / DISK_TO_GPU
            worker.loading += load
            setup += load
            loads += 1
            worker.resident, worker.combo = model.sha256, assignment.combo_key
        worker.generating += GEN_SECONDS
        owner = owner_of[assignment.job_id]
        queued_at = lifecycle.get(owners[owner], assignment.job_id).created_at
        waits[owner].append(clock.now + setup - queued_at)
        worker.job = assignment
        counter += 1
        heapq.heappush(events, (clock.now + setup + GEN_SECONDS, counter, index))

    while pending or events:
        next_arrival = pending[-1].at + start if pending else float("inf")
        if events and events[0][0] <= next_arrival:
            at, _, index = heapq.heappop(events)
            clock.now = at
            finish(lifecycle, worker_key, workers[index])
            done += 1
            claim(index)
            continue
        arrival = pending.pop()
        clock.now = next_arrival
        params = {
            "prompt": "x",
            "model": f"ckpt{arrival.checkpoint}",
            "width": 512,
            "height": 512,
            "steps": 20,
        }
        job = Txt2ImgJob(params=Txt2ImgParams.model_validate(params))
        row, _ = lifecycle.submit(owners[arrival.owner], job)
        owner_of[row.id] = arrival.owner
        for index in sorted(idle):
            claim(index)
    makespan = clock.now - start
    db.dispose()
    busy = sum(w.generating + w.loading + w.downloading for w in workers)
    gpu_time = makespan * WORKERS
    return {
        "images_per_gpu_hour": done / (gpu_time / 3600),
        "images_per_busy_hour": done / (busy / 3600),
        "generating": 100 * sum(w.generating for w in workers) / gpu_time,
        "loading": 100 * sum(w.loading for w in workers) / gpu_time,
        "downloading": 100 * sum(w.downloading for w in workers) / gpu_time,
        "idle": 100 * (gpu_time - busy) / gpu_time,
        "loads_per_1000": 1000 * loads / max(1, done),
        "paid_p95": percentile(waits[1], 95),
        "free_p95": percentile(waits[0], 95),
        "batch_p95": percentile(waits[2], 95),
        "max_wait": max(max(v) for v in waits.values() if v),
        "claim_p50_ms": percentile(claim_ms, 50),
        "makespan_h": makespan / 3600,
    }


def finish(lifecycle: JobLifecycle, key: ApiKey, worker: Worker) -> None:
    assignment = worker.job
    assert assignment is not None
    lifecycle.record_upload(
        key,
        assignment.attempt_id,
        index=0,
        key=f"jobs/{assignment.job_id}/{assignment.attempt_id}/0.png",
        size=10,
        sha256="0" * 64,
        content_type="image/png",
    )
    lifecycle.complete(
        key,
        assignment.attempt_id,
        CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=512, height=512)]),
    )
    worker.job = None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default="model-aware,lookahead-32,fifo")
    args = parser.parse_args()
    arrivals = workload(args.jobs, args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="imagefleet-policies-"))
    results = {}
    try:
        for policy in args.policies.split(","):
            say(f"{policy}: {len(arrivals)} jobs through the claim path")
            began = time.perf_counter()
            results[policy] = run(policy, arrivals, args.seed, scratch)
            say(f"  {time.perf_counter() - began:.0f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = results.get("fifo")
    rows = []
    labels = [
        ("images / busy GPU-hour", "images_per_busy_hour", 1),
        ("images / GPU-hour (whole fleet)", "images_per_gpu_hour", 1),
        ("GPU time generating %", "generating", 1),
        ("loading %", "loading", 1),
        ("downloading %", "downloading", 1),
        ("idle %", "idle", 1),
        ("checkpoint loads / 1,000 images", "loads_per_1000", 1),
        ("paid wait p95 (s)", "paid_p95", 1),
        ("free wait p95 (s)", "free_p95", 1),
        ("batch wait p95 (s)", "batch_p95", 1),
        ("max wait (s)", "max_wait", 1),
        ("claim p50 (ms, wall)", "claim_p50_ms", 1),
        ("last job done after (h)", "makespan_h", 2),
    ]
    for label, name, digits in labels:
        rows.append([label, *[fmt(results[p][name], digits) for p in results]])
    if base:
        rows.append(
            [
                "images / busy GPU-hour vs fifo",
                *[
                    fmt(results[p]["images_per_busy_hour"] / base["images_per_busy_hour"], 2)
                    for p in results
                ],
            ]
        )
    print(table(["", *results], rows))


if __name__ == "__main__":
    main()
