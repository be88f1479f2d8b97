"""Batched worker calls: several attempts' leases renewed in one call (each attempt answers
for itself), and small outputs uploaded and completed in one call."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.protocol import JobStatus
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import Model
from imagefleet.store.tables import job_events
from imagefleet.worker.orchestrator_client import OrchestratorClient
from imagefleet.worker_protocol import (
    AttemptHeartbeat,
    ClaimRequest,
    InlineCompleteRequest,
    InlineOutput,
)
from tests.conftest import Keys
from tests.load import TINY_PNG

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def _client(api: TestClient, token: str) -> OrchestratorClient:
    """The worker's real client, speaking HTTP to the app in this process."""
    client = OrchestratorClient(str(api.base_url), token)
    client.http.close()
    client.http = TestClient(api.app, headers={"Authorization": f"Bearer {token}"})
    return client


def _claimed(
    api: TestClient, keys: Keys, worker: OrchestratorClient, count: int
) -> list[tuple[str, str]]:
    """(job id, attempt id) of `count` new jobs, each claimed by `worker`."""
    attempts = []
    for _ in range(count):
        api.post(
            "/v1/jobs",
            json={"kind": "txt2img", "params": PARAMS},
            headers={"Authorization": f"Bearer {keys.alice_token}"},
        )
        answer = worker.claim(ClaimRequest(worker_id="w", node_id="n"))
        assert answer.assignment is not None
        attempts.append((answer.assignment.job_id, answer.assignment.attempt_id))
    return attempts


def test_one_call_renews_every_attempt_and_records_each_ones_progress(
    api: TestClient, keys: Keys, db: Database
) -> None:
    worker = _client(api, keys.worker_token)
    attempts = [attempt for _, attempt in _claimed(api, keys, worker, 3)]
    results = worker.heartbeat_many(
        [AttemptHeartbeat(attempt_id=a, step=i + 1, total_steps=5) for i, a in enumerate(attempts)]
    )
    assert [r.attempt_id for r in results] == attempts
    assert all(r.action == "continue" and r.lease_expires_at for r in results)
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    jobs = api.get("/v1/jobs", headers=auth).json()["jobs"]
    assert sorted(job["progress"]["step"] for job in jobs) == [1, 2, 3]
    # Each job's event stream hears of its progress, as with a single heartbeat; a repeat of
    # the same step is no new event.
    worker.heartbeat_many(
        [AttemptHeartbeat(attempt_id=a, step=1, total_steps=5) for a in attempts[:1]]
    )
    with db.read() as conn:
        steps = conn.execute(
            select(job_events.c.data).where(job_events.c.event == "progress")
        ).scalars()
        assert sorted(json.loads(data)["step"] for data in steps) == [1, 2, 3]


def test_a_cancelled_job_a_foreign_attempt_and_a_lost_lease_answer_alone(
    api: TestClient, keys: Keys, db: Database
) -> None:
    worker = _client(api, keys.worker_token)
    with db.write() as conn:
        _, other_token = create_key(conn, name="other", scope="worker", tier="free", now=1.0)
    other = _client(api, other_token)
    (_, mine), (job_id, cancelled) = _claimed(api, keys, worker, 2)
    ((_, foreign),) = _claimed(api, keys, other, 1)
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200

    results = worker.heartbeat_many(
        [AttemptHeartbeat(attempt_id=a) for a in (mine, cancelled, foreign, "f" * 32)]
    )

    assert [r.action for r in results] == ["continue", "cancel", "lost", "lost"]
    assert "for this worker key" in (results[2].reason or "")
    # The other key's attempt was not renewed by this key's call: its own beat still works.
    assert other.heartbeat_many([AttemptHeartbeat(attempt_id=foreign)])[0].action == "continue"


def test_a_batch_is_bounded(api: TestClient, keys: Keys) -> None:
    body = {"attempts": [{"attempt_id": f"a{i}"} for i in range(65)]}
    response = api.post(
        "/v1/worker/heartbeats", json=body, headers={"Authorization": f"Bearer {keys.worker_token}"}
    )
    assert response.status_code == 422


def _inline(data: bytes = TINY_PNG) -> InlineCompleteRequest:
    encoded = base64.b64encode(data).decode()
    return InlineCompleteRequest(
        outputs=[InlineOutput(index=0, seed=7, width=64, height=64, data_base64=encoded)]
    )


def test_small_outputs_are_uploaded_and_the_attempt_completed_in_one_call(
    api: TestClient, keys: Keys
) -> None:
    worker = _client(api, keys.worker_token)
    ((job_id, attempt),) = _claimed(api, keys, worker, 1)

    result = worker.complete_inline(attempt, _inline())

    assert result.job_status is JobStatus.succeeded
    assert worker.complete_inline(attempt, _inline()) == result  # a repeat: the same answer
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    job = api.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert job["outputs"][0]["seed"] == 7
    assert api.get(f"/v1/jobs/{job_id}/outputs/0", headers=auth).content == TINY_PNG


def test_an_inline_complete_from_another_key_or_with_bad_data_stores_nothing(
    api: TestClient, keys: Keys, db: Database
) -> None:
    worker = _client(api, keys.worker_token)
    with db.write() as conn:
        _, other_token = create_key(conn, name="other", scope="worker", tier="free", now=1.0)
    ((job_id, attempt),) = _claimed(api, keys, worker, 1)
    path = f"/v1/worker/attempts/{attempt}/complete-inline"
    body = _inline().model_dump(mode="json")
    other = {"Authorization": f"Bearer {other_token}"}
    assert api.post(path, json=body, headers=other).status_code == 404
    body["outputs"][0]["data_base64"] = "not base64!"
    mine = {"Authorization": f"Bearer {keys.worker_token}"}
    assert api.post(path, json=body, headers=mine).status_code == 422
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    assert api.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "running"


def test_an_inline_complete_of_a_job_cancelled_since_its_claim_answers_409_and_keeps_no_file(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    # Claimed on this replica, so the completion names its files from the claim and stores
    # them before its transaction finds the attempt stale: it must delete them again.
    worker = _client(api, keys.worker_token)
    ((job_id, attempt),) = _claimed(api, keys, worker, 1)
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    path = f"/v1/worker/attempts/{attempt}/complete-inline"
    mine = {"Authorization": f"Bearer {keys.worker_token}"}
    answer = api.post(path, json=_inline().model_dump(mode="json"), headers=mine)
    assert answer.status_code == 409 and "cancelled" in answer.json()["detail"]
    assert api.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"
    assert [p for p in settings.data_dir.rglob("*") if attempt in str(p) and p.is_file()] == []


def test_an_attempt_claimed_on_one_replica_completes_inline_on_another(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    worker = _client(api, keys.worker_token)
    ((job_id, attempt),) = _claimed(api, keys, worker, 1)
    with TestClient(create_app(settings, run_duties=False)) as other_replica:
        result = _client(other_replica, keys.worker_token).complete_inline(attempt, _inline())
    assert result.job_status is JobStatus.succeeded
    auth = {"Authorization": f"Bearer {keys.alice_token}"}
    assert api.get(f"/v1/jobs/{job_id}/outputs/0", headers=auth).content == TINY_PNG
    # The replica that claimed it still remembers the claim: its hint must not store again.
    assert worker.complete_inline(attempt, _inline()) == result
