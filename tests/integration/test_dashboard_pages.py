"""What the dashboard's job and overview pages read, in-process on SQLite and PostgreSQL: an
admin opens any tenant's job (read-only) while a client keeps to its own, a training job's
loss curve and bill, and the overview's cost in money from the usage price table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.worker_protocol import HeartbeatRequest
from tests.conftest import Keys
from tests.integration.test_dashboard_api import auth, run_one_job
from tests.training_jobs import (
    base_model_fixture,  # noqa: F401 (the fixture `base_model`)
    claim_training,
    submit_training,
)

DASHBOARD = {"X-Imagefleet-Dashboard": "1"}


def app_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, run_duties=False))


@pytest.fixture
def api(settings: Settings, keys: Keys, base_model: None) -> Iterator[TestClient]:
    with app_client(settings) as client:
        yield client


@pytest.fixture
def priced(settings: Settings, keys: Keys, base_model: None) -> Iterator[TestClient]:
    """The app with IMAGEFLEET_GPU_PRICES pricing the RTX 4090 the test worker reports."""
    with app_client(settings.model_copy(update={"gpu_prices": {"RTX 4090": 0.36}})) as client:
        yield client


def session(api: TestClient, token: str) -> None:
    """Logs the test client in as the dashboard does: the key comes back as a cookie."""
    assert api.post("/v1/dashboard/session", headers=auth(token)).status_code == 200


def test_an_admin_reads_any_tenants_job_and_a_client_only_its_own(
    api: TestClient, keys: Keys
) -> None:
    job_id = run_one_job(api, keys, keys.alice_token)
    reads = [
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/attempts",
        f"/v1/jobs/{job_id}/outputs/0",
        f"/v1/jobs/{job_id}/events",  # a final job: its history, then the stream ends
    ]
    for path in reads:
        assert api.get(path, headers=auth(keys.admin_token)).status_code == 200, path
        assert api.get(path, headers=auth(keys.bob_token)).status_code == 404, path
    events = api.get(reads[3], headers=auth(keys.admin_token)).text
    assert "event: succeeded" in events
    # Reading is all: only the owner changes a job, an admin included.
    cancel = api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(keys.admin_token))
    assert cancel.status_code == 404
    # A plain listing stays the key's own jobs; every tenant's takes all_tenants=true.
    assert api.get("/v1/jobs", headers=auth(keys.admin_token)).json()["jobs"] == []

    # The dashboard's cookie session reads exactly what the admin's Bearer key reads.
    session(api, keys.admin_token)
    job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
    assert job["id"] == job_id and job["status"] == "succeeded" and len(job["outputs"]) == 1
    assert [a["node_id"] for a in api.get(f"/v1/jobs/{job_id}/attempts").json()] == ["n"]
    session(api, keys.bob_token)
    assert api.get(f"/v1/jobs/{job_id}").json()["detail"] == f"no job {job_id!r}"


def test_an_admin_lists_every_tenants_jobs_with_their_owner_and_a_client_may_not(
    api: TestClient, keys: Keys
) -> None:
    alices = run_one_job(api, keys, keys.alice_token)
    bobs = run_one_job(api, keys, keys.bob_token)
    every = api.get("/v1/jobs?all_tenants=true", headers=auth(keys.admin_token))
    assert every.status_code == 200
    owners = {job["id"]: job["owner"] for job in every.json()["jobs"]}
    assert owners == {alices: keys.alice.name, bobs: keys.bob.name}
    page = api.get("/v1/jobs?all_tenants=true&limit=1", headers=auth(keys.admin_token)).json()
    assert [job["id"] for job in page["jobs"]] == [bobs]  # newest first, paginated as usual
    rest = api.get(
        f"/v1/jobs?all_tenants=true&cursor={page['next_cursor']}", headers=auth(keys.admin_token)
    )
    assert [job["id"] for job in rest.json()["jobs"]] == [alices]

    refused = api.get("/v1/jobs?all_tenants=true", headers=auth(keys.alice_token))
    assert refused.status_code == 403
    assert "admin key" in refused.json()["detail"]
    own = api.get("/v1/jobs", headers=auth(keys.alice_token)).json()["jobs"]
    assert [(job["id"], job["owner"]) for job in own] == [(alices, None)]


def test_a_training_jobs_loss_curve_and_bill_as_the_job_page_reads_them(
    priced: TestClient, keys: Keys
) -> None:
    lifecycle = priced.app.state.lifecycle  # type: ignore[attr-defined]
    job_id = submit_training(lifecycle, keys.alice, steps=10)
    attempt = claim_training(lifecycle, keys.worker, gpu="RTX 4090").attempt_id
    for step in (1, 2, 4):
        beat = HeartbeatRequest(step=step, total_steps=10, loss=0.5 / step, learning_rate=1e-3)
        lifecycle.heartbeat(keys.worker, attempt, beat)

    session(priced, keys.alice_token)
    view: dict[str, Any] = priced.get(f"/v1/jobs/{job_id}/training").json()
    assert [(p["step"], p["attempt"]) for p in view["loss_curve"]] == [(1, 1), (2, 1), (4, 1)]
    assert view["steps_done"] == 4 and view["total_steps"] == 10
    assert view["loss"] == pytest.approx(0.125)
    assert view["hourly_price"] == pytest.approx(0.36)
    assert view["cost"] is not None and view["cost"] >= 0
    admin = priced.get(f"/v1/jobs/{job_id}/training", headers=auth(keys.admin_token))
    assert admin.status_code == 200 and len(admin.json()["loss_curve"]) == 3
    bob = priced.get(f"/v1/jobs/{job_id}/training", headers=auth(keys.bob_token))
    assert bob.status_code == 404
    txt2img = run_one_job(priced, keys, keys.bob_token)
    refused = priced.get(f"/v1/jobs/{txt2img}/training", headers=auth(keys.bob_token))
    assert refused.status_code == 422  # the page asks only for train_lora jobs


def test_the_overview_shows_cost_in_money_with_a_price_and_says_so_without(
    priced: TestClient, settings: Settings, keys: Keys
) -> None:
    job_id = run_one_job(priced, keys, keys.alice_token)
    # One price table: the job's own record is priced by IMAGEFLEET_GPU_PRICES too.
    job = priced.get(f"/v1/jobs/{job_id}", headers=auth(keys.alice_token)).json()
    assert job["cost"]["cost_usd"] is not None and job["cost"]["unpriced_seconds"] == 0
    for token in (keys.admin_token, keys.alice_token):
        o: dict[str, Any] = priced.get("/v1/overview", headers=auth(token)).json()
        assert o["prices_configured"] is True
        assert o["cost_usd"] is not None and o["cost_usd"] >= 0
        assert o["cost_usd_per_hour"] == pytest.approx(o["cost_usd"])  # a 60-minute window
        assert o["cost_usd_per_image"] == pytest.approx(o["cost_usd"])  # one image
        assert o["unpriced_seconds"] == 0
    bobs = priced.get("/v1/overview", headers=auth(keys.bob_token)).json()
    assert (bobs["cost_usd"], bobs["cost_usd_per_image"]) == (None, None)  # bob ran nothing

    with app_client(settings) as unpriced:
        o = unpriced.get("/v1/overview", headers=auth(keys.admin_token)).json()
    assert o["prices_configured"] is False
    assert (o["cost_usd"], o["cost_usd_per_hour"], o["cost_usd_per_image"]) == (None, None, None)
    assert o["unpriced_seconds"] >= 0 and o["images"] == 1
