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
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.webhooks import WebhookDispatcher
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.tables import webhook_deliveries
from imagefleet.webhook_signing import SIGNATURE_HEADER, standard_secret, verify, verify_webhook
from tests.conftest import Keys


@dataclass
class Receiver:
    """A real HTTP endpoint that records deliveries and answers with scripted statuses. Given
    a secret, it verifies each delivery as a receiver would, with the Standard Webhooks
    reference library and with imagefleet's own verifier, and answers 401 unless both agree."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    secret: str | None = None
    verified: list[bool] = field(default_factory=list)

    def accepts(self, headers: dict[str, str], body: bytes) -> bool:
        if self.secret is None:
            return True
        try:
            Webhook(standard_secret(self.secret)).verify(body, headers)
        except WebhookVerificationError:
            return False
        return verify_webhook(self.secret, headers, body)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = dict(self.headers)
            found.received.append((headers, body))
            accepted = found.accepts(headers, body)
            found.verified.append(accepted)
            status = found.statuses.pop(0) if found.statuses else 200
            self.send_response(status if accepted else 401)
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
    secret = api.get("/v1/account", headers=auth(keys.alice_token)).json()["webhook_secret"]
    receiver.secret = secret
    job_id = submit(api, keys, receiver.url)
    run_job(api, keys)
    assert dispatch(db, settings) == 2
    assert receiver.verified == [True, True]  # by standardwebhooks and by imagefleet's verifier
    events = []
    for headers, body in receiver.received:
        assert verify(secret, headers[SIGNATURE_HEADER], body)  # the legacy header, one release
        assert headers["webhook-id"] == headers["Imagefleet-Delivery"]
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


def test_a_delivery_signed_with_another_secret_is_refused_by_the_receiver(
    api: TestClient, keys: Keys, receiver: Receiver, db: Database, settings: Settings
) -> None:
    receiver.secret = "not-the-clients-secret"
    job_id = submit(api, keys, receiver.url, events=["running"])
    run_job(api, keys)
    assert dispatch(db, settings) == 1
    assert receiver.verified == [False]
    log = api.get(f"/v1/jobs/{job_id}/webhooks", headers=auth(keys.alice_token)).json()[0]
    assert (log["state"], log["last_status"]) == ("pending", 401)


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://[2606:4700:4700::1111]/hook", True),
        ("https://[::ffff:1.1.1.1]:8443/hook", True),
        ("https://[::1]/hook", False),
        ("https://[fd00::1]/hook", False),
        ("https://[fe80::1]/hook", False),
        ("https://[::ffff:127.0.0.1]/hook", False),
    ],
)
def test_ipv6_literal_webhook_urls_follow_the_public_address_rule(
    settings: Settings, keys: Keys, model: Model, url: str, accepted: bool
) -> None:
    with TestClient(create_app(settings, run_duties=False)) as api:
        body = {
            "kind": "txt2img",
            "params": {"prompt": "x", "model": "demo"},
            "webhook": {"url": url},
        }
        response = api.post("/v1/jobs", json=body, headers=auth(keys.alice_token))
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 422
        assert "non-public address" in response.json()["detail"][0]["msg"]
