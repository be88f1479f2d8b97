"""Upload-and-complete in one call, raced on both stores: eight completions of one attempt at
once, half through the replica that handed it out (which names the files from its claim and
stores them before its transaction looks) and half through another replica (which reads first),
with a client's cancel in every other round. Each round ends with one outcome: succeeded with
exactly the attempt's one accepted output, or cancelled with no output and no file left."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.tables import artifacts
from tests.conftest import Keys
from tests.harness.at_once import at_once
from tests.load import TINY_PNG

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
COMPLETERS_PER_REPLICA = 4
ROUNDS = 6
OUTPUT = {"index": 0, "seed": 7, "width": 64, "height": 64}
BODY = {"outputs": [{**OUTPUT, "data_base64": base64.b64encode(TINY_PNG).decode()}]}


def _claimed(claimer: TestClient, keys: Keys) -> tuple[str, str]:
    """A job submitted and claimed through `claimer`: its id, and the path that completes its
    attempt inline."""
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    job_id = claimer.post(
        "/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=client
    ).json()["id"]
    claimed = claimer.post(
        "/v1/worker/claim", json={"worker_id": "w", "node_id": "n"}, headers=worker
    ).json()["assignment"]
    assert claimed["job_id"] == job_id
    return job_id, f"/v1/worker/attempts/{claimed['attempt_id']}/complete-inline"


@pytest.fixture
def replicas(settings: Settings, keys: Keys, model: Model) -> Iterator[tuple[TestClient, ...]]:
    with (
        TestClient(create_app(settings, run_duties=False)) as first,
        TestClient(create_app(settings, run_duties=False)) as second,
    ):
        yield first, second


def test_racing_inline_completions_and_a_cancel_leave_one_outcome_per_job(
    replicas: tuple[TestClient, TestClient], keys: Keys, db: Database, settings: Settings
) -> None:
    claimer, other = replicas
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    for round_ in range(ROUNDS):
        job_id, path = _claimed(claimer, keys)
        attempt_id = path.split("/")[-2]
        calls: list[Any] = [
            partial(api.post, path, json=BODY, headers=worker)
            for api in (claimer, other)
            for _ in range(COMPLETERS_PER_REPLICA)
        ]
        if round_ % 2:
            calls.append(partial(other.post, f"/v1/jobs/{job_id}/cancel", headers=client))
        answers = at_once(*calls)

        completions = answers[: 2 * COMPLETERS_PER_REPLICA]
        assert {answer.status_code for answer in completions} <= {200, 409}, [
            answer.text for answer in completions
        ]
        job = claimer.get(f"/v1/jobs/{job_id}", headers=client).json()
        with db.read() as conn:
            accepted = conn.execute(
                select(artifacts.c.attempt_id).where(
                    artifacts.c.job_id == job_id, artifacts.c.accepted.is_(True)
                )
            ).all()
        files = [p for p in settings.data_dir.rglob("*") if job_id in str(p) and p.is_file()]
        if job["status"] == "succeeded":
            assert all(a.json()["job_status"] == "succeeded" for a in completions if a.is_success)
            assert [row.attempt_id for row in accepted] == [attempt_id]
            assert len(files) == 1
            download = claimer.get(f"/v1/jobs/{job_id}/outputs/0", headers=client)
            assert download.content == TINY_PNG
        else:
            assert round_ % 2 and job["status"] == "cancelled", job["status"]
            assert not any(a.is_success for a in completions)
            assert accepted == [] and files == [], (accepted, files)


def test_a_completion_refused_without_a_read_says_why(
    replicas: tuple[TestClient, TestClient], keys: Keys, db: Database, settings: Settings
) -> None:
    """The replica that handed the attempt out completes it with no read first (the completing
    statement's compare-and-set is the ownership check): a job cancelled meanwhile still gets
    its 409 with the reason and leaves no file; a repeat after a success elsewhere gets the
    success."""
    claimer, other = replicas
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    job_id, path = _claimed(claimer, keys)
    assert other.post(f"/v1/jobs/{job_id}/cancel", headers=client).status_code == 200
    refused = claimer.post(path, json=BODY, headers=worker)
    assert refused.status_code == 409, refused.text
    assert "cancelled" in refused.text
    assert not [p for p in settings.data_dir.rglob("*") if job_id in str(p) and p.is_file()]

    job_id, path = _claimed(claimer, keys)
    assert other.post(path, json=BODY, headers=worker).json()["job_status"] == "succeeded"
    again = claimer.post(path, json=BODY, headers=worker)
    assert again.status_code == 200 and again.json()["job_status"] == "succeeded", again.text
    download = claimer.get(f"/v1/jobs/{job_id}/outputs/0", headers=client)
    assert download.content == TINY_PNG
