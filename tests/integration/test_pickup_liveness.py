"""No wake-up is lost on PostgreSQL: bursts of jobs, one after another, to 8 long-polling
workers on 2 replicas. A claim skips its look when the only news is a job a claim on its
replica took, or one a woken claim is on its way to take (orchestrator/empty_looks.py); if
that ever left a job queued with no claim coming for it, the job would wait for a parked
claim's safety-net re-check (7.5 to 10 s on PostgreSQL). Every job here must start well
before that."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from imagefleet.store.database import Database
from imagefleet.store.tables import jobs
from tests.conftest import PgFleet
from tests.harness.orchestrator import pg_replicas
from tests.load import PARAMS, LoadLog, simulated_worker

JOBS = 40
WORKERS = 8
# A lost wake-up shows as a wait of at least the safety net (LISTENING_RECHECK_SECONDS, less
# its 25% jitter); a loaded machine's slowest honest pickup stays far below it.
MAX_PICKUP_SECONDS = 5.0


@pytest.mark.timeout(300)
def test_bursts_of_jobs_to_parked_workers_start_without_waiting_for_a_recheck(
    empty_pg: PgFleet, tmp_path: Path
) -> None:
    replicas = pg_replicas(empty_pg.url, tmp_path)
    log = LoadLog()
    try:
        urls = [replica.start().url for replica in replicas]
        workers = [
            threading.Thread(
                target=simulated_worker,
                args=(f"w{i}", urls[i % 2 :] + urls[: i % 2], empty_pg.worker_key, log),
                kwargs={
                    "done": lambda: log.completed >= JOBS,
                    "wait_seconds": 12.0,  # long polls: only wake-ups bring work quickly
                    "inline": i % 2 == 1,
                    "follow": i % 4 >= 2,
                },
            )
            for i in range(WORKERS)
        ]
        for thread in workers:
            thread.start()
        time.sleep(1.0)  # the workers park
        _bursts(urls, empty_pg.client_key, random.Random(16))
        for thread in workers:
            thread.join(timeout=60)  # parked claims end with their long poll
    finally:
        for replica in replicas:
            replica.stop()

    assert log.errors == []
    assert log.completed == JOBS
    db = Database(empty_pg.url)
    with db.read() as conn:
        waits = [
            started - created
            for created, started in conn.execute(select(jobs.c.created_at, jobs.c.started_at))
        ]
    db.dispose()
    assert len(waits) == JOBS
    assert max(waits) < MAX_PICKUP_SECONDS, sorted(waits)[-5:]


def _bursts(urls: list[str], client_key: str, rng: random.Random) -> None:
    """Bursts of 1 to 4 jobs to alternating replicas, each burst sent once the last one's jobs
    have all started: with nothing else queued, a job whose wake-up went missing would be left
    for the safety net (a later job's claim would otherwise take it in passing)."""
    headers = {"Authorization": f"Bearer {client_key}"}
    body = {"kind": "txt2img", "params": PARAMS}
    with httpx.Client(headers=headers, timeout=30) as http:
        sent = 0
        while sent < JOBS:
            burst = []
            for _ in range(min(rng.randint(1, 4), JOBS - sent)):
                answer = http.post(f"{urls[sent % 2]}/v1/jobs", json=body)
                answer.raise_for_status()
                burst.append(answer.json()["id"])
                sent += 1
            deadline = time.monotonic() + 2 * MAX_PICKUP_SECONDS
            while burst and time.monotonic() < deadline:
                time.sleep(0.05)
                burst = [
                    job
                    for job in burst
                    if http.get(f"{urls[0]}/v1/jobs/{job}").json()["status"] == "queued"
                ]
            time.sleep(rng.uniform(0.0, 0.05))  # sometimes while the last ones complete
