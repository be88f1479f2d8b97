"""The lean path of the worker protocol (hot_routes.py) answers exactly as FastAPI's routes do:
the same scripted conversation (successes, every kind of error, repeats) runs against a
replica with the lean path and one without, on one database, and every answer must match
(status, content type, Retry-After, body), ids and times aside."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.kinds import job_union
from imagefleet.orchestrator import hot_routes
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.load import TINY_PNG_BASE64

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
PARAMS_SEEDED = {**PARAMS, "seed": 7}
Answer = tuple[str, int, str, str | None, str | None, Any]


def _api(settings: Settings, hot: bool) -> TestClient:
    return TestClient(create_app(settings.model_copy(update={"hot_routes": hot}), run_duties=False))


@pytest.fixture
def apis(settings: Settings, keys: Keys, model: Model) -> Iterator[dict[bool, TestClient]]:
    with _api(settings, True) as hot, _api(settings, False) as plain:
        yield {True: hot, False: plain}


def _conversation(api: TestClient, keys: Keys, run: str) -> Iterator[tuple[str, Any]]:
    """Yields (label, response) for each call; leaves the queue as it found it (empty)."""
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    claim = {"worker_id": "w", "node_id": "n", "wait_seconds": 0}
    url = "/v1/worker"
    yield "no key", api.post(f"{url}/claim", json=claim)
    yield "unknown key", api.post(f"{url}/claim", json=claim, headers={"Authorization": "Bearer x"})
    yield "other scheme", api.post(f"{url}/claim", json=claim, headers={"Authorization": "Basic x"})
    yield "client key", api.post(f"{url}/claim", json=claim, headers=client)
    yield "empty queue", api.post(f"{url}/claim", json=claim, headers=worker)
    job = {"kind": "txt2img", "params": PARAMS_SEEDED}
    yield "submit, worker key", api.post("/v1/jobs", json=job, headers=worker)
    yield "submit, no kind", api.post("/v1/jobs", json={"params": PARAMS}, headers=client)
    unknown = {"kind": "txt2img", "params": {**PARAMS, "model": "nope"}}
    yield "submit, unknown model", api.post("/v1/jobs", json=unknown, headers=client)
    long_key = {**client, "Idempotency-Key": "k" * 201}
    yield "submit, long key", api.post("/v1/jobs", json=job, headers=long_key)
    once = {**client, "Idempotency-Key": f"once-{run}"}
    yield "submit", api.post("/v1/jobs", json=job, headers=once)
    yield "submit, replayed", api.post("/v1/jobs", json=job, headers=once)
    other = {"kind": "txt2img", "params": {**PARAMS_SEEDED, "seed": 8}}
    yield "submit, key reused", api.post("/v1/jobs", json=other, headers=once)
    yield "unknown field", api.post(f"{url}/claim", json={**claim, "x": 1}, headers=worker)
    yield (
        "bool for int",
        api.post(f"{url}/claim", json={**claim, "wait_seconds": True}, headers=worker),
    )
    yield "not json", api.post(f"{url}/claim", content=b"{", headers=worker)
    yield (
        "text body",
        api.post(f"{url}/claim", content=b"{}", headers={**worker, "Content-Type": "text/plain"}),
    )
    claimed = api.post(f"{url}/claim", json=claim, headers=worker)
    yield "claim", claimed
    attempt = claimed.json()["assignment"]["attempt_id"]
    beat = {"step": 1, "total_steps": 2}
    at = f"{url}/attempts/{attempt}"
    yield "heartbeat", api.post(f"{at}/heartbeat", json=beat, headers=worker)
    yield "heartbeat, client key", api.post(f"{at}/heartbeat", json=beat, headers=client)
    yield (
        "heartbeat, unknown",
        api.post(f"{url}/attempts/nope/heartbeat", json=beat, headers=worker),
    )
    yield "heartbeat, bad step", api.post(f"{at}/heartbeat", json={"step": -1}, headers=worker)
    batch = {"attempts": [{"attempt_id": attempt, **beat}, {"attempt_id": "nope", **beat}]}
    yield "heartbeats", api.post(f"{url}/heartbeats", json=batch, headers=worker)
    yield "heartbeats, none", api.post(f"{url}/heartbeats", json={"attempts": []}, headers=worker)
    output = {"index": 0, "seed": 7, "width": 64, "height": 64, "data_base64": TINY_PNG_BASE64}
    bad = {"outputs": [{**output, "data_base64": "not base64!"}]}
    yield "complete, bad base64", api.post(f"{at}/complete-inline", json=bad, headers=worker)
    done = {"outputs": [output]}
    yield "complete", api.post(f"{at}/complete-inline", json=done, headers=worker)
    yield "complete again", api.post(f"{at}/complete-inline", json=done, headers=worker)
    plain = {"outputs": [{"index": 0, "seed": 7, "width": 64, "height": 64}]}
    yield "plain complete, repeat", api.post(f"{at}/complete", json=plain, headers=worker)
    yield "plain complete, none", api.post(f"{at}/complete", json={"outputs": []}, headers=worker)
    yield "heartbeat, finished", api.post(f"{at}/heartbeat", json=beat, headers=worker)
    failure = {"code": "worker_error", "message": "boom", "retryable": False}
    yield "fail, finished", api.post(f"{at}/fail", json=failure, headers=worker)
    assert api.post("/v1/jobs", json=job, headers=client).status_code == 201
    second = api.post(f"{url}/claim", json=claim, headers=worker).json()["assignment"]
    at = f"{url}/attempts/{second['attempt_id']}"
    yield "fail, bad code", api.post(f"{at}/fail", json={"code": "nope"}, headers=worker)
    yield "fail", api.post(f"{at}/fail", json=failure, headers=worker)
    yield "fail again", api.post(f"{at}/fail", json=failure, headers=worker)
    # Completions that claim the worker's next job in their transaction (`next`).
    for _ in range(2):
        assert api.post("/v1/jobs", json=job, headers=client).status_code == 201
    third = api.post(f"{url}/claim", json=claim, headers=worker).json()["assignment"]
    at = f"{url}/attempts/{third['attempt_id']}"
    bad_next = {**done, "next": {**claim, "worker_id": ""}}
    yield "complete, bad next", api.post(f"{at}/complete-inline", json=bad_next, headers=worker)
    follows = {**done, "next": claim}
    answered = api.post(f"{at}/complete-inline", json=follows, headers=worker)
    yield "complete, next", answered
    at = f"{url}/attempts/{answered.json()['next']['assignment']['attempt_id']}"
    yield "complete, nothing next", api.post(f"{at}/complete-inline", json=follows, headers=worker)
    yield "complete again, next", api.post(f"{at}/complete-inline", json=follows, headers=worker)


_IDS = re.compile(r"\b(?:job|att|j|a)_[0-9A-Za-z_-]+|[0-9a-f]{32}|[0-9a-f-]{36}")


def _normal(value: Any, key: str = "") -> Any:
    """The answer without what differs between two runs: ids, times, storage keys."""
    if isinstance(value, dict):
        return {k: _normal(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v, key) for v in value]
    if key.endswith("_at") or key in {"key", "url", "job_id", "attempt_id", "fencing_token"}:
        return "<varies>" if value is not None else None
    if isinstance(value, str):
        return _IDS.sub("<id>", value)
    return value


def _answers(api: TestClient, keys: Keys, run: str) -> list[Answer]:
    return [
        (
            label,
            response.status_code,
            response.headers.get("content-type", ""),
            response.headers.get("retry-after"),
            response.headers.get("idempotent-replayed"),
            _normal(response.json()),
        )
        for label, response in _conversation(api, keys, run)
    ]


def test_the_lean_path_answers_every_call_as_fastapi_does(
    apis: dict[bool, TestClient], keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    check = hot_routes.check_key

    async def counted(request: Any, token: str | None, audience: str) -> Any:
        taken.append(request.url.path)
        return await check(request, token, audience)

    monkeypatch.setattr(hot_routes, "check_key", counted)
    lean = _answers(apis[True], keys, "lean")
    assert len(taken) >= 20, taken  # the lean path answered the calls it can take whole
    taken.clear()
    plain = _answers(apis[False], keys, "plain")
    assert not taken
    for (label, *mine), (_, *theirs) in zip(lean, plain, strict=True):
        assert mine == theirs, label
    statuses = {label: status for label, status, *_ in plain}
    # The conversation covers what it means to: successes and each kind of refusal.
    assert statuses["claim"] == statuses["complete"] == statuses["heartbeats"] == 200
    assert {statuses[k] for k in ("no key", "unknown key", "client key")} == {401, 403}
    assert statuses["unknown field"] == statuses["complete, bad base64"] == 422
    assert statuses["complete, bad next"] == 422
    assert statuses["complete, next"] == statuses["complete, nothing next"] == 200
    bodies = {label: body for label, *_, body in plain}
    assert bodies["complete, next"]["next"]["assignment"]["kind"] == "txt2img"
    assert bodies["complete, nothing next"]["next"]["assignment"] is None
    assert bodies["complete again, next"]["next"] is None  # a repeat claims nothing
    assert statuses["heartbeat, unknown"] == statuses["submit, unknown model"] == 404
    assert (statuses["submit"], statuses["submit, replayed"]) == (201, 200)


def test_requests_the_lean_path_does_not_take_reach_fastapi(settings: Settings) -> None:
    """Other methods and paths, root paths, non-JSON types and other schemes go on unread."""

    def taken(method: str, path: str, headers: list[tuple[bytes, bytes]], root: str = "") -> bool:
        scope = {"type": "http", "method": method, "path": path, "root_path": root}
        routes = hot_routes.hot_routes(job_union())
        return hot_routes._taken({**scope, "headers": headers}, routes) is not None

    bearer = [(b"authorization", b"Bearer k")]
    assert taken("POST", "/v1/worker/attempts/a1/heartbeat", bearer)
    assert taken("POST", "/v1/worker/claim", [*bearer, (b"content-type", b"application/json")])
    assert not taken("POST", "/v1/worker/claim", [*bearer, (b"content-type", b"text/plain")])
    assert not taken("POST", "/v1/worker/claim", [(b"authorization", b"Basic k")])
    assert not taken("POST", "/v1/worker/claim", [])
    assert not taken("POST", "/v1/worker/claim/", bearer)
    assert not taken("POST", "/v1/worker/attempts/a/b/heartbeat", bearer)
    assert not taken("PUT", "/v1/worker/attempts/a1/outputs/0", bearer)
    assert not taken("GET", "/v1/worker/claim", bearer)
    assert not taken("POST", "/v1/worker/claim", bearer, root="/api")
    assert taken("POST", "/v1/jobs", [*bearer, (b"idempotency-key", b"k" * 200)])
    assert not taken("POST", "/v1/jobs", [*bearer, (b"idempotency-key", b"k" * 201)])
    assert not taken("POST", "/v1/jobs/j1/cancel", bearer)
    # The first Authorization header counts, as Starlette reads it.
    assert not taken("POST", "/v1/worker/claim", [(b"authorization", b"Basic k"), *bearer])
