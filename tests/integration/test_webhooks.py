"""Webhooks end to end over real HTTP: events written with the state change, delivered signed,
retried with backoff, logged, and never pointed at private networks without consent."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.webhooks import WebhookDispatcher
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.tables import webhook_deliveries
from imagefleet.webhook_signing import SIGNATURE_HEADER, verify
from tests.conftest import Keys


@dataclass
class Receiver:
    """A real HTTP endpoint that records deliveries and answers with scripted statuses."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.received.append((dict(self.headers), body))
            self.send_response(found.statuses.pop(0) if found.statuses else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    settings.webhook_allow_private = True
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(api: TestClient, keys: Keys, url: str, events: list[str] | None = None) -> str:
    webhook: dict[str, Any] = {"url": url}
    if events:
        webhook["events"] = events
    body = {"kind": "txt2img", "params": {"prompt": "x", "model": "demo"}, "webhook": webhook}
    response = api.post("/v1/jobs", json=body, headers=auth(keys.alice_token))
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def run_job(api: TestClient, keys: Keys) -> None:
    worker = auth(keys.worker_token)
    claim = api.post("/v1/worker/claim", json={"worker_id": "w", "node_id": "n"}, headers=worker)
    attempt = claim.json()["assignment"]["attempt_id"]
    api.put(
        f"/v1/worker/attempts/{attempt}/outputs/0",
        content=b"png",
        headers={**worker, "Content-Type": "image/png"},
    )
    api.post(
        f"/v1/worker/attempts/{attempt}/complete",
        json={"outputs": [{"index": 0, "seed": 1, "width": 512, "height": 512}]},
        headers=worker,
    )


def dispatch(db: Database, settings: Settings) -> int:
    import asyncio

    async def once() -> int:
        async with httpx.AsyncClient(timeout=5) as http:
            return await WebhookDispatcher(db, settings).deliver_due(http)

    return asyncio.run(once())


def test_events_are_delivered_signed_with_the_clients_secret(
    api: TestClient, keys: Keys, receiver: Receiver, db: Database, settings: Settings
) -> None:
    job_id = submit(api, keys, receiver.url)
    run_job(api, keys)
    assert dispatch(db, settings) == 2
    secret = api.get("/v1/account", headers=auth(keys.alice_token)).json()["webhook_secret"]
    events = []
    for headers, body in receiver.received:
        assert verify(secret, headers[SIGNATURE_HEADER], body)
        events.append(headers["Imagefleet-Event"])
        assert f'"id":"{job_id}"' in body.decode()
    assert sorted(events) == ["running", "succeeded"]
    log = api.get(f"/v1/jobs/{job_id}/webhooks", headers=auth(keys.alice_token)).json()
    assert [(d["event"], d["state"], d["attempts"], d["last_status"]) for d in log] == [
        ("running", "delivered", 1, 200),
        ("succeeded", "delivered", 1, 200),
    ]
    assert dispatch(db, settings) == 0  # delivered once, not again


def test_only_the_requested_events_are_sent(
    api: TestClient, keys: Keys, receiver: Receiver, db: Database, settings: Settings
) -> None:
    job_id = submit(api, keys, receiver.url, events=["cancelled"])
    api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(keys.alice_token))
    api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(keys.alice_token))  # no second event
    assert dispatch(db, settings) == 1
    assert [h["Imagefleet-Event"] for h, _ in receiver.received] == ["cancelled"]


def test_a_failing_endpoint_is_retried_with_backoff_until_it_answers(
    api: TestClient, keys: Keys, receiver: Receiver, db: Database, settings: Settings
) -> None:
    receiver.statuses = [500, 503]
    job_id = submit(api, keys, receiver.url, events=["running"])
    run_job(api, keys)
    for expected_attempts in (1, 2):
        before = time.time()
        assert dispatch(db, settings) == 1
        assert dispatch(db, settings) == 0  # not due yet: backing off
        log = api.get(f"/v1/jobs/{job_id}/webhooks", headers=auth(keys.alice_token)).json()[0]
        assert (log["state"], log["attempts"], log["last_error"]) == (
            "pending",
            expected_attempts,
            f"HTTP {500 if expected_attempts == 1 else 503}",
        )
        with db.write() as conn:  # let the backoff pass
            conn.execute(update(webhook_deliveries).values(next_attempt_at=before))
    assert dispatch(db, settings) == 1
    log = api.get(f"/v1/jobs/{job_id}/webhooks", headers=auth(keys.alice_token)).json()[0]
    assert (log["state"], log["attempts"]) == ("delivered", 3)


def test_a_dead_endpoint_is_given_up_after_the_max_age(
    api: TestClient, keys: Keys, db: Database, settings: Settings
) -> None:
    settings.webhook_max_age_seconds = 1
    job_id = submit(api, keys, "http://127.0.0.1:9/nothing-listens-here", events=["running"])
    run_job(api, keys)
    assert dispatch(db, settings) == 1
    log = api.get(f"/v1/jobs/{job_id}/webhooks", headers=auth(keys.alice_token)).json()[0]
    assert log["state"] == "gave_up" and "ConnectError" in log["last_error"]


def test_private_webhook_urls_are_refused_unless_allowed(
    settings: Settings, keys: Keys, model: Model
) -> None:
    with TestClient(create_app(settings, run_duties=False)) as api:
        body = {
            "kind": "txt2img",
            "params": {"prompt": "x", "model": "demo"},
            "webhook": {"url": "http://127.0.0.1:8080/x"},
        }
        response = api.post("/v1/jobs", json=body, headers=auth(keys.alice_token))
        assert response.status_code == 422
        assert "non-public address" in response.json()["detail"][0]["msg"]
        body["webhook"] = {"url": "ftp://example.com/x"}
        assert api.post("/v1/jobs", json=body, headers=auth(keys.alice_token)).status_code == 422
