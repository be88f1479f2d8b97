"""Scale-in tells a worker to drain through its answers: its heartbeat says so while its job
runs on (the job is never cut short), and its claims get no work, even with jobs queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.worker.orchestrator_client import OrchestratorClient
from imagefleet.worker_protocol import ClaimRequest
from tests.conftest import Keys

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 3}


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


@pytest.fixture
def worker_client(api: TestClient, keys: Keys) -> Iterator[OrchestratorClient]:
    """The worker's real client, speaking HTTP to the app in this process."""
    client = OrchestratorClient(str(api.base_url), keys.worker_token)
    client.http.close()
    client.http = api
    api.headers["Authorization"] = f"Bearer {keys.worker_token}"
    yield client
    client.storage.close()


def submit(api: TestClient, keys: Keys) -> str:
    response = api.post(
        "/v1/jobs",
        json={"kind": "txt2img", "params": PARAMS},
        headers={"Authorization": f"Bearer {keys.alice_token}"},
    )
    job_id: str = response.json()["id"]
    return job_id


def test_a_drained_worker_hears_it_in_its_heartbeat_keeps_its_job_and_gets_no_more(
    api: TestClient, keys: Keys, worker_client: OrchestratorClient, db: Database
) -> None:
    submit(api, keys)
    submit(api, keys)
    claim = ClaimRequest(worker_id="w", node_id="n", pool="cpu")
    assignment = worker_client.claim(claim).assignment
    assert assignment is not None
    with db.write() as conn:
        worker_sql.request_drain(conn, ["n"], "scale-in", 1.0)

    answer = worker_client.heartbeat(assignment.attempt_id, 2, 3)
    assert answer.action == "continue" and answer.drain == "scale-in"  # the job goes on

    again = worker_client.claim(claim)
    assert again.assignment is None and again.drain == "scale-in" and again.retry_after_seconds > 0
    # Another node still gets the queued job.
    other = worker_client.claim(ClaimRequest(worker_id="w2", node_id="m"))
    assert other.assignment is not None

    with db.write() as conn:
        worker_sql.cancel_drain(conn, ["n"])
    assert worker_client.claim(claim).drain is None
