"""The HTTP API on a real SQLite store: status codes, error messages, auth and pagination."""

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


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(api: TestClient, token: str, **params: Any) -> Any:
    return api.post(
        "/v1/jobs", json={"kind": "txt2img", "params": {**PARAMS, **params}}, headers=auth(token)
    )


def claim(api: TestClient, keys: Keys) -> dict[str, Any]:
    response = api.post(
        "/v1/worker/claim", json={"worker_id": "w", "node_id": "n"}, headers=auth(keys.worker_token)
    )
    assert response.status_code == 200
    assignment: dict[str, Any] = response.json()["assignment"]
    return assignment


def test_submit_returns_the_queued_job_with_its_seed(api: TestClient, keys: Keys) -> None:
    response = submit(api, keys.alice_token, seed=42)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued" and body["params"]["seed"] == 42 and body["tier"] == "free"
    assert body["progress"] == {"fraction": 0.0, "step": 0, "total_steps": 0}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"width": 100}, "width", "multiple of 8"),
        ({"width": 2048}, "width", "between 64 and 1024"),
        ({"width": 1024, "height": 1024}, "width", "at most 262144 pixels"),
        ({"steps": 500}, "steps", "less than or equal to 150"),
        ({"num_images": 9}, "num_images", "less than or equal to 8"),
        ({"scheduler": "magic"}, "scheduler", "ddim"),
        ({"colour": "red"}, "colour", "not permitted"),
    ],
)
def test_invalid_fields_answer_422_naming_the_field_and_the_allowed_range(
    api: TestClient, keys: Keys, params: dict[str, Any], field: str, words: str
) -> None:
    response = submit(api, keys.alice_token, **params)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"][-1] == field and words in e["msg"] for e in errors), errors


def test_an_unknown_model_answers_404_at_submit_time(api: TestClient, keys: Keys) -> None:
    response = submit(api, keys.alice_token, model="sdxl-nope")
    assert response.status_code == 404 and "sdxl-nope" in response.json()["detail"]


def test_bodies_over_the_limit_are_refused_with_413(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    response = submit(api, keys.alice_token, prompt="x" * (settings.max_body_bytes + 1))
    assert response.status_code == 413


def test_missing_malformed_and_revoked_keys_answer_401(
    api: TestClient, keys: Keys, db: Any
) -> None:
    from imagefleet.store.keys import revoke_key

    assert api.get("/v1/jobs").status_code == 401
    assert api.get("/v1/jobs", headers=auth("nonsense")).status_code == 401
    assert api.get("/v1/jobs", headers=auth(keys.alice_token + "x")).status_code == 401
    with db.write() as conn:
        revoke_key(conn, keys.alice.id, 2.0)
    assert api.get("/v1/jobs", headers=auth(keys.alice_token)).status_code == 401


def test_worker_keys_cannot_submit_and_client_keys_cannot_claim(
    api: TestClient, keys: Keys
) -> None:
    assert submit(api, keys.worker_token).status_code == 403
    response = api.post(
        "/v1/worker/claim", json={"worker_id": "w", "node_id": "n"}, headers=auth(keys.alice_token)
    )
    assert response.status_code == 403 and "worker key" in response.json()["detail"]


def test_admin_keys_may_act_as_clients(api: TestClient, keys: Keys) -> None:
    assert submit(api, keys.admin_token).status_code == 201


def test_another_clients_job_and_files_answer_404(api: TestClient, keys: Keys) -> None:
    job_id = submit(api, keys.alice_token).json()["id"]
    assignment = claim(api, keys)
    attempt = assignment["attempt_id"]
    worker = auth(keys.worker_token)
    api.put(
        f"/v1/worker/attempts/{attempt}/outputs/0",
        content=b"\x89PNG-ish",
        headers={**worker, "Content-Type": "image/png"},
    )
    api.post(
        f"/v1/worker/attempts/{attempt}/complete",
        json={"outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64}]},
        headers=worker,
    )
    bob = auth(keys.bob_token)
    assert api.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/outputs/0", headers=bob).status_code == 404
    own = api.get(f"/v1/jobs/{job_id}/outputs/0", headers=auth(keys.alice_token))
    assert own.status_code == 200 and own.content == b"\x89PNG-ish"


def test_the_whole_worker_protocol_over_http(api: TestClient, keys: Keys) -> None:
    job_id = submit(api, keys.alice_token, num_images=2).json()["id"]
    assignment = claim(api, keys)
    assert assignment["job_id"] == job_id and assignment["models"][0]["sha256"] == "d" * 64
    attempt, worker = assignment["attempt_id"], auth(keys.worker_token)
    beat = api.post(
        f"/v1/worker/attempts/{attempt}/heartbeat",
        json={"step": 1, "total_steps": 2},
        headers=worker,
    )
    assert beat.json()["action"] == "continue"
    running = api.get(f"/v1/jobs/{job_id}", headers=auth(keys.alice_token)).json()
    assert running["status"] == "running" and running["progress"]["fraction"] == 0.5
    for index in range(2):
        upload = api.put(
            f"/v1/worker/attempts/{attempt}/outputs/{index}",
            content=b"png",
            headers={**worker, "Content-Type": "image/png"},
        )
        assert upload.status_code == 200
    done = api.post(
        f"/v1/worker/attempts/{attempt}/complete",
        json={
            "outputs": [{"index": i, "seed": 7 + i, "width": 64, "height": 64} for i in range(2)],
            "timings": {"model_load_seconds": 1.5, "inference_seconds": 2.0, "upload_seconds": 0.1},
        },
        headers=worker,
    )
    assert done.json() == {"job_id": job_id, "job_status": "succeeded", "next": None}
    job = api.get(f"/v1/jobs/{job_id}", headers=auth(keys.alice_token)).json()
    assert [o["seed"] for o in job["outputs"]] == [7, 8]
    assert job["outputs"][0]["url"].endswith(f"/v1/jobs/{job_id}/outputs/0")
    assert job["timings"]["inference_seconds"] == 2.0 and job["timings"]["total_seconds"] >= 0


def test_the_owner_sees_the_attempt_history_and_nobody_else_does(
    api: TestClient, keys: Keys
) -> None:
    job_id = submit(api, keys.alice_token).json()["id"]
    attempt = claim(api, keys)["attempt_id"]
    api.post(
        f"/v1/worker/attempts/{attempt}/fail",
        json={"code": "out_of_memory", "message": "CUDA out of memory"},
        headers=auth(keys.worker_token),
    )
    history = api.get(f"/v1/jobs/{job_id}/attempts", headers=auth(keys.alice_token)).json()
    assert [(a["number"], a["worker_id"], a["node_id"], a["outcome"]) for a in history] == [
        (1, "w", "n", "failed")
    ]
    assert history[0]["error"] == {"code": "out_of_memory", "message": "CUDA out of memory"}
    assert history[0]["ended_at"] is not None
    assert api.get(f"/v1/jobs/{job_id}/attempts", headers=auth(keys.bob_token)).status_code == 404


def test_uploads_check_type_size_and_lease(api: TestClient, keys: Keys, settings: Settings) -> None:
    submit(api, keys.alice_token)
    attempt = claim(api, keys)["attempt_id"]
    worker = auth(keys.worker_token)
    url = f"/v1/worker/attempts/{attempt}/outputs/0"
    assert (
        api.put(url, content=b"x", headers={**worker, "Content-Type": "text/plain"}).status_code
        == 415
    )
    too_big = b"x" * (settings.max_upload_bytes + 1)
    assert (
        api.put(url, content=too_big, headers={**worker, "Content-Type": "image/png"}).status_code
        == 413
    )
    api.post(
        f"/v1/worker/attempts/{attempt}/fail",
        json={"code": "worker_error", "retryable": False},
        headers=worker,
    )
    assert (
        api.put(url, content=b"x", headers={**worker, "Content-Type": "image/png"}).status_code
        == 409
    )


def test_calls_from_a_stale_attempt_answer_409(api: TestClient, keys: Keys) -> None:
    job_id = submit(api, keys.alice_token).json()["id"]
    attempt = claim(api, keys)["attempt_id"]
    api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(keys.alice_token))
    worker = auth(keys.worker_token)
    beat = api.post(f"/v1/worker/attempts/{attempt}/heartbeat", json={}, headers=worker)
    assert beat.json()["action"] == "cancel"
    complete = api.post(
        f"/v1/worker/attempts/{attempt}/complete",
        json={"outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64}]},
        headers=worker,
    )
    assert complete.status_code == 409
    assert (
        api.post("/v1/worker/attempts/nope/heartbeat", json={}, headers=worker).status_code == 404
    )


def test_listing_is_newest_first_paginated_and_filterable(api: TestClient, keys: Keys) -> None:
    ids = [submit(api, keys.alice_token).json()["id"] for _ in range(5)]
    submit(api, keys.bob_token)
    alice = auth(keys.alice_token)
    seen, cursor = [], None
    while True:
        page = api.get(
            "/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=alice
        ).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    api.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice)
    cancelled = api.get("/v1/jobs", params={"status": "cancelled"}, headers=alice).json()["jobs"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    assert api.get("/v1/jobs", params={"cursor": "garbage!"}, headers=alice).status_code == 422


def test_an_empty_claim_long_polls_for_the_requested_time(api: TestClient, keys: Keys) -> None:
    import time

    from imagefleet.orchestrator.routes_worker import POLL_JITTER

    started = time.monotonic()
    response = api.post(
        "/v1/worker/claim",
        json={"worker_id": "w", "node_id": "n", "wait_seconds": 0.6},
        headers=auth(keys.worker_token),
    )
    assert response.json()["assignment"] is None
    # The server ends a long poll up to POLL_JITTER early, at random (see routes_worker).
    assert time.monotonic() - started >= 0.6 * (1 - POLL_JITTER) - 0.01


def test_models_are_listed_and_openapi_is_served(api: TestClient, keys: Keys) -> None:
    models = api.get("/v1/models", headers=auth(keys.alice_token)).json()
    assert [(m["name"], m["version"]) for m in models] == [("demo", 1)]
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/worker/claim", "/v1/worker/attempts/{attempt_id}/complete"} <= set(
        paths
    )


def test_idempotent_submits_over_http(api: TestClient, keys: Keys) -> None:
    headers = {**auth(keys.alice_token), "Idempotency-Key": "order-42"}
    body = {"kind": "txt2img", "params": PARAMS}
    first = api.post("/v1/jobs", json=body, headers=headers)
    again = api.post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert (
        again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    )
    changed = api.post("/v1/jobs", json={**body, "params": {**PARAMS, "steps": 3}}, headers=headers)
    assert changed.status_code == 409 and "Idempotency-Key" in changed.json()["detail"]


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(
    settings: Settings, keys: Keys, model: Model
) -> None:
    settings.rate_limit_per_second = 1
    settings.rate_limit_burst = 3
    with TestClient(create_app(settings, run_duties=False)) as api:
        codes = [api.get("/v1/jobs", headers=auth(keys.alice_token)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        limited = api.get("/v1/jobs", headers=auth(keys.alice_token))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert api.get("/v1/jobs", headers=auth(keys.bob_token)).status_code == 200


def test_admins_see_quarantined_nodes_and_can_release_them(
    settings: Settings, keys: Keys, model: Model
) -> None:
    settings.quarantine_failures = 2
    with TestClient(create_app(settings, run_duties=False)) as api:
        worker = auth(keys.worker_token)
        for _ in range(2):
            submit(api, keys.alice_token)
            attempt = claim(api, keys)["attempt_id"]
            api.post(
                f"/v1/worker/attempts/{attempt}/fail", json={"code": "worker_error"}, headers=worker
            )
        refused = api.post(
            "/v1/worker/claim", json={"worker_id": "w", "node_id": "n"}, headers=worker
        )
        assert refused.json()["assignment"] is None
        assert "2 failed attempts" in refused.json()["quarantined"]
        admin = auth(keys.admin_token)
        nodes = api.get("/v1/admin/nodes", headers=admin).json()
        assert [(n["id"], n["status"], n["recent_failures"]) for n in nodes] == [
            ("n", "quarantined", 2)
        ]
        events = api.get("/v1/admin/events", headers=admin).json()
        assert [(e["node_id"], e["kind"]) for e in events] == [("n", "quarantined")]
        released = api.post("/v1/admin/nodes/n/release", headers=admin).json()
        assert released[0]["status"] == "active"
        assert api.post("/v1/admin/nodes/n/release", headers=admin).status_code == 404
        later = api.get("/v1/admin/events", params={"after": events[0]["id"]}, headers=admin).json()
        assert [e["kind"] for e in later] == ["released"]


# --- the explainable queue (issue 11) ----------------------------------------------------------


def test_a_queued_job_says_why_it_waits_and_a_claimed_one_why_it_went_where_it_did(
    api: TestClient, keys: Keys
) -> None:
    first = submit(api, keys.alice_token).json()
    assert first["queue"]["reason"].startswith("no worker that runs txt2img")
    assert first["warning"] is None  # no worker seen yet: nothing to judge
    second = submit(api, keys.alice_token).json()["id"]
    assignment = claim(api, keys)
    assert assignment["job_id"] == first["id"] and assignment["placement"]
    shown = api.get(f"/v1/jobs/{first['id']}", headers=auth(keys.alice_token)).json()
    assert shown["placement"] == assignment["placement"] and shown["queue"] is None
    waiting = api.get(f"/v1/jobs/{second}", headers=auth(keys.alice_token)).json()
    assert waiting["queue"]["ahead"] == 0 and waiting["queue"]["reason"]


def test_a_job_no_seen_worker_could_run_carries_a_warning(api: TestClient, keys: Keys) -> None:
    small = {"worker_id": "s", "node_id": "s", "capabilities": {"max_pixels": 4096}}
    assert api.post("/v1/worker/claim", json=small, headers=auth(keys.worker_token)).is_success
    flagged = submit(api, keys.alice_token, width=128, height=128).json()
    assert (
        flagged["warning"] == "no worker seen in the last 24 h takes 16384 pixels (largest: 4096)"
    )
    assert flagged["queue"]["reason"] == flagged["warning"]


def test_the_submits_snapshot_of_the_fleet_neither_hides_nor_invents_a_warning(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    """A submit reads the workers seen from its replica's snapshot (`orchestrator.seen_workers`),
    made here to outlast the test: a report this replica records ends it, and a job the snapshot
    finds unservable is checked against the workers read afresh before it is warned."""
    api.app.state.lifecycle.seen_workers.fresh_seconds = 3600.0  # type: ignore[attr-defined]
    assert submit(api, keys.alice_token).json()["warning"] is None  # snapshot: no worker yet
    small = {"worker_id": "s", "node_id": "s", "capabilities": {"max_pixels": 4096}}
    assert api.post("/v1/worker/claim", json=small, headers=auth(keys.worker_token)).is_success
    flagged = submit(api, keys.alice_token, width=128, height=128).json()
    assert flagged["warning"] == (
        "no worker seen in the last 24 h takes 16384 pixels (largest: 4096)"
    )
    with TestClient(create_app(settings, run_duties=False)) as other:  # another replica
        large = {"worker_id": "l", "node_id": "l", "capabilities": {"max_pixels": 1 << 20}}
        claimed = other.post("/v1/worker/claim", json=large, headers=auth(keys.worker_token))
        assert claimed.is_success
    served = submit(api, keys.alice_token, width=256, height=256).json()
    assert served["warning"] is None, served  # the snapshot knew only the small worker
