"""Previews through the API in-process: a worker PUTs the newest JPEG of its running attempt,
the job's owner (or an admin) GETs it; bounded, typed, and only for the attempt's own worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.previews import MAX_BYTES, Preview, PreviewStore
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.integration.test_dashboard_api import PARAMS, auth

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
JPEG = b"\xff\xd8\xff\xe0 a tiny jpeg"


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


@sqlite_only
def test_the_newest_preview_of_a_running_job_reaches_its_owner(api: TestClient, keys: Keys) -> None:
    body = {"kind": "txt2img", "params": PARAMS}
    job_id = api.post("/v1/jobs", json=body, headers=auth(keys.alice_token)).json()["id"]
    preview = f"/v1/jobs/{job_id}/preview"
    assert api.get(preview, headers=auth(keys.alice_token)).status_code == 404  # none yet
    worker = auth(keys.worker_token)
    claim = {"worker_id": "w", "node_id": "n"}
    attempt = api.post("/v1/worker/claim", json=claim, headers=worker).json()["assignment"]
    put = f"/v1/worker/attempts/{attempt['attempt_id']}/preview"
    jpeg = {**worker, "Content-Type": "image/jpeg"}
    for step in (1, 2):
        sent = api.put(put, params={"step": step, "total_steps": 4}, content=JPEG, headers=jpeg)
        assert sent.status_code == 204
    got = api.get(preview, headers=auth(keys.alice_token))
    assert got.status_code == 200 and got.content == JPEG
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-imagefleet-preview-step"] == "2"
    assert api.get(preview, headers=auth(keys.admin_token)).status_code == 200
    assert api.get(preview, headers=auth(keys.bob_token)).status_code == 404

    too_big = api.put(put, content=b"x" * (MAX_BYTES + 1), headers=jpeg)
    assert too_big.status_code == 413
    gif = api.put(put, content=JPEG, headers={**worker, "Content-Type": "image/gif"})
    assert gif.status_code == 415


def test_the_store_keeps_the_newest_per_job_for_a_bounded_number_of_jobs() -> None:
    store = PreviewStore(max_jobs=2)
    for job, step in (("a", 1), ("b", 1), ("a", 2), ("c", 1)):
        store.put(job, Preview("at", step, 4, "image/jpeg", b"x"))
    assert store.get("b") is None  # the least recently updated went first
    assert (store.get("a"), store.get("c")) != (None, None)
    a = store.get("a")
    assert a is not None and a.step == 2
