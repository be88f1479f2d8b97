"""Exactly-once results on PostgreSQL under deliberate races (issue 7's probe, made a test).

Two replica processes share one PostgreSQL database; 32 simulated workers claim over real HTTP
with a 2 s lease and a reaper every 0.1 s, and many of them act right at lease expiry: they
complete, fail or heartbeat just before or just after the lease runs out, complete twice at
once, complete and fail the same attempt at once, while clients cancel jobs. Then the database
and the API are audited: at most one attempt's files accepted per job, no 2xx answer that the
database contradicts, no 5xx, no deadlock counted by PostgreSQL, views equal to the rows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import select

from imagefleet.store.database import Database
from imagefleet.store.tables import artifacts, attempts, jobs, webhook_deliveries
from tests.conftest import PgFleet
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import child_env
from tests.load import TINY_PNG

JOBS = 300
WORKERS = 32
LEASE = 2.0
SEED = 20261201
COMPLETE = {"outputs": [{"index": 0, "seed": 0, "width": 64, "height": 64}]}
PARAMS = {"prompt": "race", "model": "demo", "width": 64, "height": 64, "steps": 1}


@dataclass
class Answer:
    """One worker-protocol call and what the server said."""

    action: str
    job_id: str
    attempt_id: str
    status: int
    body: Any
    sent_at: float


@dataclass
class Record:
    answers: list[Answer] = field(default_factory=list)
    cancels: list[tuple[str, int, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


def _deadlocks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _expiry(assignment: dict[str, Any]) -> float:
    return datetime.fromisoformat(assignment["lease_expires_at"]).timestamp()


def _worker(index: int, urls: list[str], key: str, record: Record, stop: threading.Event) -> None:
    """Claims and then attacks its attempt in one of several ways, chosen by a seeded RNG."""
    rng = random.Random(SEED + index)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=30) as http:
        turn = index
        while not stop.is_set():
            turn += 1
            base = urls[turn % 2]
            other = urls[(turn + 1) % 2]
            body = {"worker_id": f"w{index}", "node_id": f"n{index}", "wait_seconds": 0.5}
            claim = http.post(f"{base}/v1/worker/claim", json=body)
            if claim.status_code != 200:
                record.add(Answer("claim", "", "", claim.status_code, claim.text, time.time()))
                continue
            assignment = claim.json()["assignment"]
            if assignment is None:
                continue
            _attack(http, rng, base, other, assignment, record)


def _call(
    http: httpx.Client,
    record: Record,
    action: str,
    assignment: dict[str, Any],
    url: str,
    **kwargs: Any,
) -> httpx.Response:
    sent = time.time()
    response = http.request(kwargs.pop("method", "POST"), url, **kwargs)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    record.add(
        Answer(
            action, assignment["job_id"], assignment["attempt_id"], response.status_code, body, sent
        )
    )
    return response


def _attack(
    http: httpx.Client,
    rng: random.Random,
    base: str,
    other: str,
    assignment: dict[str, Any],
    record: Record,
) -> None:
    prefix = f"/v1/worker/attempts/{assignment['attempt_id']}"
    expiry = _expiry(assignment)
    _call(
        http,
        record,
        "upload",
        assignment,
        f"{base}{prefix}/outputs/0",
        method="PUT",
        content=TINY_PNG,
        headers={"Content-Type": "image/png"},
    )
    attack = rng.choice(
        ["plain", "late_complete", "late_complete", "late_fail", "late_heartbeat", "twice", "both"]
    )

    def at_expiry() -> None:
        time.sleep(max(0.0, expiry + rng.uniform(-0.3, 0.3) - time.time()))

    if attack == "plain":
        _call(http, record, "complete", assignment, f"{base}{prefix}/complete", json=COMPLETE)
    elif attack == "late_complete":
        at_expiry()
        _call(http, record, "complete", assignment, f"{other}{prefix}/complete", json=COMPLETE)
    elif attack == "late_fail":
        at_expiry()
        _call(
            http,
            record,
            "fail",
            assignment,
            f"{other}{prefix}/fail",
            json={"code": "worker_error", "message": "late"},
        )
    elif attack == "late_heartbeat":
        at_expiry()
        beat = _call(
            http,
            record,
            "heartbeat",
            assignment,
            f"{other}{prefix}/heartbeat",
            json={"step": 1, "total_steps": 1},
        )
        if beat.status_code == 200 and beat.json()["action"] == "continue":
            # Granted a fresh lease: finish inside it, on the other replica.
            time.sleep(rng.uniform(0.0, LEASE / 2))
            _call(http, record, "complete", assignment, f"{base}{prefix}/complete", json=COMPLETE)
    else:
        second = (
            ("complete", f"{other}{prefix}/complete", COMPLETE)
            if attack == "twice"
            else ("fail", f"{other}{prefix}/fail", {"code": "worker_error", "message": "both"})
        )
        at_expiry()
        with httpx.Client(headers=http.headers, timeout=30) as parallel:
            thread = threading.Thread(
                target=_call, args=(parallel, record, second[0], assignment, second[1])
            )
            thread.start()
            _call(http, record, "complete", assignment, f"{base}{prefix}/complete", json=COMPLETE)
            thread.join()


def _canceller(urls: list[str], key: str, job_ids: list[str], record: Record) -> None:
    rng = random.Random(SEED)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for job_id in rng.sample(job_ids, len(job_ids) // 10):
            time.sleep(rng.uniform(0.0, 0.05))
            response = http.post(f"{urls[rng.randrange(2)]}/v1/jobs/{job_id}/cancel")
            with record.lock:
                record.cancels.append((job_id, response.status_code, response.json()))


def test_completes_fails_heartbeats_and_cancels_at_lease_expiry_accept_one_result_per_job(
    empty_pg: PgFleet, tmp_path: Path
) -> None:
    env = {
        "IMAGEFLEET_DATABASE_URL": empty_pg.url,
        "IMAGEFLEET_LEASE_SECONDS": str(LEASE),
        "IMAGEFLEET_REAPER_INTERVAL_SECONDS": "0.1",
        "IMAGEFLEET_RATE_LIMIT_PER_SECOND": "0",
        "IMAGEFLEET_RETRY_BACKOFF_SECONDS": "0",
        "IMAGEFLEET_SAME_NODE_RETRY_DELAY_SECONDS": "0",
        "IMAGEFLEET_MAX_ATTEMPTS": "4",
        "IMAGEFLEET_QUARANTINE_FAILURES": "0",
        "IMAGEFLEET_WEBHOOK_ALLOW_PRIVATE": "true",
        "IMAGEFLEET_WEBHOOK_POLL_SECONDS": "3600",
    }
    deadlocks_before = _deadlocks(empty_pg.url)
    replicas = [
        OrchestratorProcess(
            tmp_path / f"replica-{i}", env=child_env(**env), data_dir=tmp_path / f"replica-{i}"
        )
        for i in range(2)
    ]
    record = Record()
    stop = threading.Event()
    try:
        urls = [replica.start().url for replica in replicas]
        job_ids = _submit(urls, empty_pg.client_key)
        threads = [
            threading.Thread(target=_worker, args=(i, urls, empty_pg.worker_key, record, stop))
            for i in range(WORKERS)
        ]
        threads.append(
            threading.Thread(target=_canceller, args=(urls, empty_pg.client_key, job_ids, record))
        )
        for thread in threads:
            thread.start()
        _wait_until_all_final(empty_pg.url, deadline=time.monotonic() + 240)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        views = _views(urls[0], empty_pg.client_key, job_ids)
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()

    _audit(empty_pg.url, record, views)
    assert _deadlocks(empty_pg.url) == deadlocks_before
    attacked = {a.action for a in record.answers}
    assert {"complete", "fail", "heartbeat", "upload"} <= attacked


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


def _audit(url: str, record: Record, views: dict[str, dict[str, Any]]) -> None:
    db = Database(url)
    with db.read() as conn:
        job_rows = {row.id: row for row in conn.execute(select(jobs)).all()}
        attempt_rows = {row.id: row for row in conn.execute(select(attempts)).all()}
        accepted = conn.execute(
            select(artifacts.c.job_id, artifacts.c.attempt_id, artifacts.c.idx).where(
                artifacts.c.accepted.is_(True)
            )
        ).all()
        events = conn.execute(select(webhook_deliveries.c.job_id, webhook_deliveries.c.event)).all()
    db.dispose()

    server_errors = [a for a in record.answers if a.status >= 500]
    assert server_errors == [], server_errors[:5]

    # At most one attempt's files accepted per job, and only the winner's.
    accepted_by_job: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for job_id, attempt_id, idx in accepted:
        accepted_by_job[job_id].append((attempt_id, idx))
    for job_id, files in accepted_by_job.items():
        row = job_rows[job_id]
        assert row.status == "succeeded", (job_id, row.status, files)
        assert files == [(row.result_attempt_id, 0)], (job_id, files)
    for job_id, row in job_rows.items():
        if row.status == "succeeded":
            assert job_id in accepted_by_job

    # No 2xx the database contradicts.
    for answer in record.answers:
        if answer.status != 200:
            continue
        row = job_rows[answer.job_id]
        attempt = attempt_rows[answer.attempt_id]
        if answer.action == "complete":
            assert answer.body["job_status"] == "succeeded"
            assert row.status == "succeeded" and row.result_attempt_id == answer.attempt_id, answer
        elif answer.action == "fail":
            assert attempt.outcome == "failed", (answer, attempt.outcome)
        elif answer.action == "heartbeat" and answer.body["action"] == "continue":
            granted = datetime.fromisoformat(answer.body["lease_expires_at"]).timestamp()
            if attempt.outcome == "lease_expired":
                # Reaped only after the lease this heartbeat granted had run out.
                assert attempt.ended_at >= granted - 0.05, (answer, attempt.ended_at)
    # A cancel that answered "cancelled" beat every completion.
    for job_id, status, body in record.cancels:
        assert status == 200
        if body["status"] == "cancelled":
            assert job_rows[job_id].status == "cancelled"
            assert job_id not in accepted_by_job

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
