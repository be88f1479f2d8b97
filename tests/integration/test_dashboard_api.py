"""The dashboard's endpoints in-process: its pages, the cookie session and /v1/overview."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
# The page and the session do not touch SQL beyond a key lookup: SQLite is enough for them.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_one_job(api: TestClient, keys: Keys, token: str) -> str:
    """Submits a job with `token` and has a worker on node `n` finish it with one image."""
    job_id: str = api.post(
        "/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=auth(token)
    ).json()["id"]
    worker = auth(keys.worker_token)
    claim = {
        "worker_id": "w",
        "node_id": "n",
        "capabilities": {"gpu_name": "RTX 4090", "vram_mb": 24564},
        "resident_models": ["d" * 64],
        "cached_models": ["d" * 64, "e" * 64],
    }
    attempt = api.post("/v1/worker/claim", json=claim, headers=worker).json()["assignment"]
    api.put(
        f"/v1/worker/attempts/{attempt['attempt_id']}/outputs/0",
        content=b"\x89PNG-ish",
        headers={**worker, "Content-Type": "image/png"},
    )
    done = api.post(
        f"/v1/worker/attempts/{attempt['attempt_id']}/complete",
        json={"outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64}]},
        headers=worker,
    )
    assert done.status_code == 200, done.text
    return job_id


@sqlite_only
def test_the_page_and_its_files_are_served_with_a_strict_policy(api: TestClient) -> None:
    page = api.get("/ui")
    assert page.status_code == 200 and 'src="ui/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = api.get("/ui/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert api.get("/ui/static/..%2Fprotocol.py").status_code == 404
    assert api.get("/ui/static/nope.js").status_code == 404
    slash = api.get("/ui/", follow_redirects=False)
    assert slash.status_code == 308 and slash.headers["location"] == "/ui"


@sqlite_only
def test_login_sets_an_httponly_cookie_that_authenticates_reads(
    api: TestClient, keys: Keys
) -> None:
    refused = api.post("/v1/dashboard/session", json={"key": "if_nope_nope"})
    assert refused.status_code == 401
    worker = api.post("/v1/dashboard/session", json={"key": keys.worker_token})
    assert worker.status_code == 403
    login = api.post("/v1/dashboard/session", json={"key": keys.alice_token})
    assert login.status_code == 200 and login.json()["name"] == "alice"
    assert keys.alice_token not in login.text
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert api.get("/v1/dashboard/session").json()["scope"] == "client"
    assert api.get("/v1/jobs").status_code == 200
    api.delete("/v1/dashboard/session")
    assert api.get("/v1/jobs").status_code == 401


@sqlite_only
def test_a_cookie_session_changes_state_only_with_the_dashboard_header(
    api: TestClient, keys: Keys
) -> None:
    api.post("/v1/dashboard/session", json={"key": keys.alice_token})
    body = {"kind": "txt2img", "params": PARAMS}
    forged = api.post("/v1/jobs", json=body)
    assert forged.status_code == 403 and "X-Imagefleet-Dashboard" in forged.json()["detail"]
    own = api.post("/v1/jobs", json=body, headers={"X-Imagefleet-Dashboard": "1"})
    assert own.status_code == 201


def test_an_admin_overview_covers_the_fleet_and_a_client_only_its_own_jobs(
    api: TestClient, keys: Keys
) -> None:
    run_one_job(api, keys, keys.alice_token)
    api.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=auth(keys.bob_token))

    fleet: dict[str, Any] = api.get("/v1/overview", headers=auth(keys.admin_token)).json()
    assert fleet["scope"] == "fleet"
    assert (fleet["queued"], fleet["running"], fleet["succeeded"], fleet["images"]) == (1, 0, 1, 1)
    assert [(q["tier"], q["queued"]) for q in fleet["queue"]] == [("paid", 1)]
    assert fleet["wait"]["samples"] == 1 and fleet["wait"]["p50_seconds"] >= 0
    assert sum(b["images"] for b in fleet["series"]) == 1 and len(fleet["series"]) == 12
    assert fleet["cost_units_per_hour"] > 0
    [worker] = fleet["workers"]
    assert (worker["state"], worker["gpu_name"], worker["vram_mb"]) == ("idle", "RTX 4090", 24564)
    assert worker["resident_models"] == ["demo@1"]
    assert (worker["cached_models"], worker["cached_names"]) == (2, ["demo@1"])
    assert fleet["workers_by_gpu"] == {"RTX 4090": 1}
    assert sorted(j["owner"] for j in fleet["recent_jobs"]) == ["alice", "bob"]

    bobs: dict[str, Any] = api.get("/v1/overview", headers=auth(keys.bob_token)).json()
    assert bobs["scope"] == "account"
    assert (bobs["queued"], bobs["succeeded"], bobs["images"]) == (1, 0, 0)
    assert bobs["workers"] is None and bobs["recent_jobs"] is None
    assert api.get("/v1/overview", headers=auth(keys.worker_token)).status_code == 403
    assert api.get("/v1/overview?window_minutes=1", headers=auth(keys.bob_token)).status_code == 422
