"""The worker's heartbeat reports the final step even for a job faster than one beat."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from imagefleet.worker.heartbeat import Heartbeat
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


def _progress(api: TestClient, keys: Keys, job_id: str) -> tuple[int, int]:
    job = api.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {keys.alice_token}"})
    progress = job.json()["progress"]
    return progress["step"], progress["total_steps"]


def _running_attempt(
    api: TestClient, keys: Keys, worker_client: OrchestratorClient
) -> tuple[str, str]:
    job = api.post(
        "/v1/jobs",
        json={"kind": "txt2img", "params": PARAMS},
        headers={"Authorization": f"Bearer {keys.alice_token}"},
    ).json()
    answer = worker_client.claim(ClaimRequest(worker_id="w", node_id="n"))
    assert answer.assignment is not None
    return job["id"], answer.assignment.attempt_id


def test_finish_reports_the_last_step_that_no_beat_carried_yet(
    api: TestClient, keys: Keys, worker_client: OrchestratorClient
) -> None:
    job_id, attempt_id = _running_attempt(api, keys, worker_client)
    beat = Heartbeat(worker_client, attempt_id, interval=300.0, progress_interval=300.0)
    beat.start()
    for step in (1, 2, 3):
        beat.progress(step, 3)
    assert _progress(api, keys, job_id) == (0, 0)  # the beats were held back by the rate limit

    beat.finish()

    assert _progress(api, keys, job_id) == (3, 3)
    assert not beat.cancelled


def test_finish_after_a_cancel_sends_nothing_more(
    api: TestClient, keys: Keys, worker_client: OrchestratorClient
) -> None:
    job_id, attempt_id = _running_attempt(api, keys, worker_client)
    api.post(f"/v1/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {keys.alice_token}"})
    beat = Heartbeat(worker_client, attempt_id, interval=300.0, progress_interval=300.0)
    beat.start()
    beat.progress(1, 3)
    beat.finish()
    assert beat.cancelled
