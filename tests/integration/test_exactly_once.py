"""Exactly-once results on PostgreSQL under deliberate races (issue 7's probe, made a test).

Two replica processes share one PostgreSQL database; 32 simulated workers claim over real HTTP
with a 2 s lease and a reaper every 0.1 s, and many of them act right at lease expiry: they
complete, fail or heartbeat just before or just after the lease runs out, complete twice at
once, complete and fail the same attempt at once (tests/harness/races.py), while clients
cancel jobs. Then the database and the API are audited: at most one attempt's files accepted
per job, no 2xx answer that the database contradicts, no 5xx, no deadlock counted by
PostgreSQL, one final webhook event per job, views equal to the rows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from imagefleet.store.database import Database
from imagefleet.store.tables import artifacts, attempts, jobs, webhook_deliveries
from tests.conftest import PgFleet
from tests.harness.orchestrator import pg_replicas
from tests.harness.races import AnswerLog, contradictions, pg_deadlocks, start_attackers

JOBS = 300
WORKERS = 32
LEASE = 2.0
SEED = 20261201
PARAMS = {"prompt": "race", "model": "demo", "width": 64, "height": 64, "steps": 1}


def _canceller(
    urls: list[str], key: str, job_ids: list[str], cancels: list[tuple[str, int, Any]]
) -> None:
    rng = random.Random(SEED)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for job_id in rng.sample(job_ids, len(job_ids) // 10):
            time.sleep(rng.uniform(0.0, 0.05))
            response = http.post(f"{urls[rng.randrange(2)]}/v1/jobs/{job_id}/cancel")
            cancels.append((job_id, response.status_code, response.json()))


def test_completes_fails_heartbeats_and_cancels_at_lease_expiry_accept_one_result_per_job(
    empty_pg: PgFleet, tmp_path: Path
) -> None:
    deadlocks_before = pg_deadlocks(empty_pg.url)
    replicas = pg_replicas(
        empty_pg.url,
        tmp_path,
        IMAGEFLEET_LEASE_SECONDS=str(LEASE),
        IMAGEFLEET_REAPER_INTERVAL_SECONDS="0.1",
        IMAGEFLEET_RETRY_BACKOFF_SECONDS="0",
        IMAGEFLEET_SAME_NODE_RETRY_DELAY_SECONDS="0",
        IMAGEFLEET_MAX_ATTEMPTS="4",
        IMAGEFLEET_QUARANTINE_FAILURES="0",
        IMAGEFLEET_WEBHOOK_ALLOW_PRIVATE="true",
        IMAGEFLEET_WEBHOOK_POLL_SECONDS="3600",
    )
    log = AnswerLog()
    cancels: list[tuple[str, int, Any]] = []
    stop = threading.Event()
    try:
        urls = [replica.start().url for replica in replicas]
        job_ids = _submit(urls, empty_pg.client_key)
        stop, threads = start_attackers(WORKERS, urls, empty_pg.worker_key, log, seed=SEED)
        canceller = threading.Thread(
            target=_canceller, args=(urls, empty_pg.client_key, job_ids, cancels)
        )
        canceller.start()
        _wait_until_all_final(empty_pg.url, deadline=time.monotonic() + 240)
        stop.set()
        for thread in [*threads, canceller]:
            thread.join(timeout=60)
        views = _views(urls[0], empty_pg.client_key, job_ids)
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()

    _audit(empty_pg.url, log, cancels, views)
    assert pg_deadlocks(empty_pg.url) == deadlocks_before
    assert all(log.count(action) for action in ("complete", "fail", "heartbeat", "upload"))


def _submit(urls: list[str], key: str) -> list[str]:
    ids = []
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["succeeded", "failed", "cancelled"]}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for n in range(JOBS):
            response = http.post(
                f"{urls[n % 2]}/v1/jobs",
                json={"kind": "txt2img", "params": PARAMS, "webhook": hook},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def _wait_until_all_final(url: str, deadline: float) -> None:
    db = Database(url)
    try:
        while time.monotonic() < deadline:
            with db.read() as conn:
                active = conn.execute(
                    select(jobs.c.id).where(jobs.c.status.in_(("queued", "running"))).limit(1)
                ).first()
            if active is None:
                return
            time.sleep(0.5)
        raise AssertionError("jobs still active after the deadline")
    finally:
        db.dispose()


def _views(url: str, key: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        return {job_id: http.get(f"{url}/v1/jobs/{job_id}").json() for job_id in job_ids}


def _audit(
    url: str,
    log: AnswerLog,
    cancels: list[tuple[str, int, Any]],
    views: dict[str, dict[str, Any]],
) -> None:
    db = Database(url)
    with db.read() as conn:
        job_rows = {row.id: row for row in conn.execute(select(jobs)).all()}
        attempt_rows = {row.id: row for row in conn.execute(select(attempts)).all()}
        accepted = [
            tuple(row)
            for row in conn.execute(
                select(artifacts.c.job_id, artifacts.c.attempt_id, artifacts.c.idx).where(
                    artifacts.c.accepted.is_(True)
                )
            ).all()
        ]
        events = conn.execute(select(webhook_deliveries.c.job_id, webhook_deliveries.c.event)).all()
    db.dispose()

    assert contradictions(log.answers, job_rows, attempt_rows, accepted) == []
    succeeded_with_files = {job_id for job_id, _, _ in accepted}
    for job_id, row in job_rows.items():
        assert (row.status == "succeeded") == (job_id in succeeded_with_files), job_id
    # A cancel that answered "cancelled" beat every completion.
    for job_id, status, body in cancels:
        assert status == 200
        if body["status"] == "cancelled":
            assert job_rows[job_id].status == "cancelled"
    # One final webhook event per job, matching its final status.
    finals: dict[str, list[str]] = defaultdict(list)
    for job_id, event in events:
        finals[job_id].append(event)
    for job_id, row in job_rows.items():
        assert finals[job_id] == [row.status], (job_id, finals[job_id], row.status)
    # The API shows what the database holds.
    for job_id, view in views.items():
        row = job_rows[job_id]
        assert view["status"] == row.status
        assert [o["index"] for o in view["outputs"]] == ([0] if row.status == "succeeded" else [])
