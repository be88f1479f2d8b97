"""Every endpoint x every way a caller can be wrong: no key, a revoked key, the wrong scope,
another tenant. The endpoint list comes from the app itself, so a new endpoint is covered (and
must be classified here) the day it is added."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key, revoke_key
from imagefleet.store.models import Model
from tests.conftest import Keys

PARAMS = {"prompt": "x", "model": "demo", "width": 64, "height": 64}
BODIES: dict[str, Any] = {
    "/v1/jobs": {"kind": "txt2img", "params": PARAMS},
    "/v1/worker/claim": {"worker_id": "w", "node_id": "n"},
    "/v1/admin/models": {"name": "m", "source": "/nowhere"},
    "/v1/worker/attempts/{attempt_id}/heartbeat": {},
    "/v1/worker/attempts/{attempt_id}/complete": {
        "outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64}]
    },
    "/v1/worker/attempts/{attempt_id}/fail": {"code": "worker_error"},
    "/v1/worker/attempts/{attempt_id}/complete-inline": {
        "outputs": [{"index": 0, "seed": 1, "width": 64, "height": 64, "data_base64": "aGk="}]
    },
    "/v1/worker/attempts/{attempt_id}/resume": {"resumed_from_step": 0},
    "/v1/worker/attempts/{attempt_id}/checkpoints/{step}/stored": {
        "size_bytes": 1,
        "sha256": "0" * 64,
    },
    "/v1/worker/attempts/{attempt_id}/outputs/{index}/multipart": {"size_bytes": 10},
    "/v1/worker/attempts/{attempt_id}/outputs/{index}/multipart/complete": {
        "upload_id": "u",
        "parts": [{"part_number": 1, "etag": "e"}],
    },
}
# /metrics is read by Prometheus without a key (docs/autoscaling.md says to keep it internal).
PUBLIC = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"}
# The ComfyUI-compatible API lives at ComfyUI's own paths, for clients (docs/workflows.md).
COMFY_PATHS = ("/prompt", "/history", "/view", "/queue", "/interrupt", "/object_info", "/upload/")


@pytest.fixture
def world(
    settings: Settings, keys: Keys, model: Model, db: Database
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """Alice's job claimed by the fixture's worker, plus a revoked key of each scope and a
    second worker key."""
    with db.write() as conn:
        _, revoked_client = create_key(conn, name="rc", scope="client", tier="free", now=1.0)
        _, revoked_worker = create_key(conn, name="rw", scope="worker", tier="free", now=1.0)
        _, other_worker = create_key(conn, name="ow", scope="worker", tier="free", now=1.0)
        _, revoked_admin = create_key(conn, name="ra", scope="admin", tier="free", now=1.0)
        for token in (revoked_client, revoked_worker, revoked_admin):
            revoke_key(conn, token.split("_")[1], 2.0)
    with TestClient(create_app(settings, run_duties=False)) as api:
        alice = {"Authorization": f"Bearer {keys.alice_token}"}
        job = api.post("/v1/jobs", json=BODIES["/v1/jobs"], headers=alice).json()
        claim = api.post(
            "/v1/worker/claim",
            json=BODIES["/v1/worker/claim"],
            headers={"Authorization": f"Bearer {keys.worker_token}"},
        ).json()
        ids = {
            "job_id": job["id"],
            "attempt_id": claim["assignment"]["attempt_id"],
            "index": "0",
            "node_id": "n",
            "name": "init_image",
            "prompt_id": job["id"],
            "node_class": "KSampler",
            "checkpoint_id": "1",
            "step": "1",
            "alias": "production",  # deployments (issue 15)
        }
        tokens = {
            "client": keys.alice_token,
            "worker": keys.worker_token,
            "revoked-client": revoked_client,
            "revoked-worker": revoked_worker,
            "revoked-admin": revoked_admin,
            "other-client": keys.bob_token,
            "other-worker": other_worker,
        }
        yield api, ids, tokens


def endpoints() -> list[tuple[str, str]]:
    """Every operation in the app's OpenAPI document (the same list clients see)."""
    schema = create_app(Settings(database_url="sqlite://"), run_duties=False).openapi()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path not in PUBLIC
        for method in operations
    ]


ENDPOINTS = endpoints()


def call(api: TestClient, method: str, path: str, ids: dict[str, str], token: str | None) -> int:
    url = path.format(**ids)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "PUT":
        headers["Content-Type"] = "application/zip" if "/checkpoints/" in path else "image/png"
        return api.put(url, content=b"png", headers=headers).status_code
    return api.request(method, url, json=BODIES.get(path), headers=headers).status_code


def audience(path: str) -> str:
    prefixes = (
        ("/v1/worker/", "worker"),
        ("/v1/admin/", "admin"),
        ("/v1/", "client"),
        ("/sdapi/", "client"),  # the A1111 compatibility API takes client keys
    )
    for prefix, name in prefixes:
        if path.startswith(prefix):
            return name
    if path.startswith(COMFY_PATHS):
        return "client"
    raise AssertionError(f"{path} belongs to no audience: classify it here")


# The scope that is wrong for each audience (admins may act as clients, so not vice versa).
WRONG_SCOPE = {"worker": "client", "client": "worker", "admin": "client"}


def test_every_api_endpoint_is_in_the_matrix() -> None:
    assert {audience(path) for _, path in ENDPOINTS} == {"worker", "client", "admin"}
    assert len(ENDPOINTS) >= 14


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_key_and_revoked_keys_answer_401(
    world: tuple[TestClient, dict[str, str], dict[str, str]], method: str, path: str
) -> None:
    api, ids, tokens = world
    assert call(api, method, path, ids, None) == 401
    assert call(api, method, path, ids, "if_0000_garbage") == 401
    assert call(api, method, path, ids, tokens[f"revoked-{audience(path)}"]) == 401


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_the_wrong_scope_answers_403(
    world: tuple[TestClient, dict[str, str], dict[str, str]], method: str, path: str
) -> None:
    api, ids, tokens = world
    assert call(api, method, path, ids, tokens[WRONG_SCOPE[audience(path)]]) == 403
    if audience(path) == "admin":
        assert call(api, method, path, ids, tokens["worker"]) == 403


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p in ENDPOINTS if "{job_id}" in p or "{attempt_id}" in p]
)
def test_another_tenant_gets_404_for_ids_it_does_not_own(
    world: tuple[TestClient, dict[str, str], dict[str, str]], method: str, path: str
) -> None:
    api, ids, tokens = world
    other = "other-worker" if path.startswith("/v1/worker/") else "other-client"
    assert call(api, method, path, ids, tokens[other]) == 404
