"""Idle workers' claims over HTTP, on both stores: while a worker like the claiming one found
nothing a moment ago, its claim stops after a read (or before any, for a worker checked
lately); new work it can run, a job retried after failing on some node, and quarantine all
still reach it (orchestrator/empty_looks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy import event

from imagefleet.config import Settings
from imagefleet.orchestrator import worker_claims
from imagefleet.orchestrator.app import create_app
from imagefleet.store import nodes as node_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from tests.conftest import Keys

SMALL_CAPS = {"max_pixels": 64 * 64}
SMALL_JOB = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
BIG_JOB = {**SMALL_JOB, "width": 128, "height": 128}  # too many pixels for SMALL_CAPS


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


class Statements:
    """Counts every statement this process sends while active."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if not statement.startswith(("BEGIN", "SELECT pg_notify")):
            self.sent.append(" ".join(statement.split())[:100])

    def __enter__(self) -> Statements:
        event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self)


def _claim(api: TestClient, keys: Keys, worker: str, wait: float = 0.0) -> dict[str, Any] | None:
    body = {"worker_id": worker, "node_id": worker, "wait_seconds": wait}
    body["capabilities"] = SMALL_CAPS
    headers = {"Authorization": f"Bearer {keys.worker_token}"}
    response = api.post("/v1/worker/claim", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assignment: dict[str, Any] | None = response.json()["assignment"]
    return assignment


def _submit(api: TestClient, keys: Keys, params: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {keys.alice_token}"}
    response = api.post("/v1/jobs", json={"kind": "txt2img", "params": params}, headers=headers)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_crowd_of_idle_workers_that_cannot_run_the_queue_looks_once(
    api: TestClient, keys: Keys
) -> None:
    _submit(api, keys, BIG_JOB)
    assert _claim(api, keys, "small-a") is None  # looks in full: nothing it can run
    with Statements() as first:
        assert _claim(api, keys, "small-b") is None  # new here: recorded, checked, no search
    assert not any("FROM jobs" in s and "ORDER BY" in s for s in first.sent), first.sent
    with Statements() as again:
        assert _claim(api, keys, "small-b") is None
        assert _claim(api, keys, "small-a") is None
    assert again.sent == []
    # New work the crowd can run ends the empty look at once (a claim that would still stop
    # parks, and the announcement wakes it).
    job = _submit(api, keys, SMALL_JOB)
    taken = _claim(api, keys, "small-b", wait=5.0)
    assert taken is not None and taken["job_id"] == job


def test_a_job_retried_after_failing_on_one_node_reaches_a_worker_on_another(
    api: TestClient, keys: Keys
) -> None:
    """small-a's empty look finds nothing because the job failed on its node; that must not
    stand for small-b, whose node the job never failed on."""
    job = _submit(api, keys, SMALL_JOB)
    taken = _claim(api, keys, "small-a")
    assert taken is not None
    headers = {"Authorization": f"Bearer {keys.worker_token}"}
    failed = api.post(
        f"/v1/worker/attempts/{taken['attempt_id']}/fail",
        json={"code": "worker_error", "retryable": True},
        headers=headers,
    )
    assert failed.json()["job_status"] == "queued"
    assert _claim(api, keys, "small-a") is None  # not again on the node it failed on
    assert _claim(api, keys, "small-a") is None
    retried = _claim(api, keys, "small-b")
    assert retried is not None and retried["job_id"] == job


def test_a_quarantine_reaches_an_idle_worker_whose_claims_stop_early(
    api: TestClient, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _submit(api, keys, BIG_JOB)
    assert _claim(api, keys, "small-a") is None
    assert _claim(api, keys, "small-b") is None
    db = Database(settings.database_url)
    try:
        with db.write() as conn:
            node_sql.quarantine(conn, "small-b", "test: bad GPU", 1.0)
    finally:
        db.dispose()
    # Within BLOCKS_FRESH_SECONDS of its last check the claim may still stop early; the
    # first claim past it reads the node again.
    monkeypatch.setattr(worker_claims, "BLOCKS_FRESH_SECONDS", 0.0)
    body = {"worker_id": "small-b", "node_id": "small-b", "wait_seconds": 0}
    body["capabilities"] = SMALL_CAPS
    headers = {"Authorization": f"Bearer {keys.worker_token}"}
    response = api.post("/v1/worker/claim", json=body, headers=headers)
    assert response.json()["quarantined"] == "test: bad GPU"


def test_a_busy_worker_stops_early_when_the_only_news_is_a_job_taken_here(
    api: TestClient, keys: Keys
) -> None:
    """small-b just took the job announced since small-a's empty look: its next claim (a busy
    worker's, right after its job) reads nothing. A job nobody here took still ends the look."""
    api.app.state.work_signal.empty_looks.fresh_seconds = 60.0  # type: ignore[attr-defined]
    assert _claim(api, keys, "small-a") is None  # nothing queued: an empty look
    job = _submit(api, keys, SMALL_JOB)
    taken = _claim(api, keys, "small-b", wait=5.0)
    assert taken is not None and taken["job_id"] == job
    with Statements() as busy:
        assert _claim(api, keys, "small-b") is None
        assert _claim(api, keys, "small-a") is None
    assert busy.sent == []
    other = _submit(api, keys, SMALL_JOB)
    again = _claim(api, keys, "small-a", wait=5.0)
    assert again is not None and again["job_id"] == other
