"""Progress streams (server-sent events) over real HTTP: live events as a worker moves a job,
resuming with Last-Event-ID, tenancy, and two replicas on PostgreSQL (LISTEN/NOTIFY)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from imagefleet.client.sse import parse_events
from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys, PgFleet
from tests.harness.servers import serving

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
WAIT = 20.0  # seconds a condition may take on a loaded machine before the test gives up


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Stream:
    """Reads an event stream on a thread and hands each event over as it arrives."""

    def __init__(self, url: str, token: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.status: int | None = None
        self._open = threading.Event()
        self._http = httpx.Client(timeout=WAIT)
        self._thread = threading.Thread(
            target=self._read, args=(url, {**auth(token), **(headers or {})}), daemon=True
        )
        self._thread.start()
        assert self._open.wait(WAIT), "the stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self._open.set()
                for event in parse_events(response.iter_lines()):
                    body = json.loads(event.data)
                    self.events.put({"sse_id": event.id, "sse_event": event.event, **body})
        except httpx.HTTPError:
            pass  # closed by close(): a live feed never ends by itself
        finally:
            self._open.set()
            self.events.put(None)  # the stream ended

    def next(self) -> dict[str, Any]:
        event = self.events.get(timeout=WAIT)
        assert event is not None, "the stream ended early"
        return event

    def close(self) -> None:
        self._http.close()
        self._thread.join(timeout=WAIT)

    def ended(self) -> bool:
        """True once the server closed the stream (after what it had sent)."""
        self._thread.join(timeout=WAIT)
        return not self._thread.is_alive()


class Worker:
    """A worker driven by hand over the worker API."""

    def __init__(self, http: httpx.Client, token: str) -> None:
        self.http, self.headers = http, auth(token)

    def claim(self) -> str:
        body = {"worker_id": "w", "node_id": "n", "wait_seconds": 5}
        answer = self.http.post("/v1/worker/claim", json=body, headers=self.headers).json()
        attempt: str = answer["assignment"]["attempt_id"]
        return attempt

    def beat(self, attempt: str, step: int, total: int) -> None:
        answer = self.http.post(
            f"/v1/worker/attempts/{attempt}/heartbeat",
            json={"step": step, "total_steps": total},
            headers=self.headers,
        )
        assert answer.status_code == 200, answer.text

    def complete(self, attempt: str) -> None:
        self.http.put(
            f"/v1/worker/attempts/{attempt}/outputs/0",
            content=b"\x89PNG-ish",
            headers={**self.headers, "Content-Type": "image/png"},
        )
        done = self.http.post(
            f"/v1/worker/attempts/{attempt}/complete",
            json={"outputs": [{"index": 0, "seed": 7, "width": 64, "height": 64}]},
            headers=self.headers,
        )
        assert done.status_code == 200, done.text

    def fail(self, attempt: str) -> None:
        body = {"code": "worker_error", "message": "boom", "retryable": False}
        assert (
            self.http.post(
                f"/v1/worker/attempts/{attempt}/fail", json=body, headers=self.headers
            ).status_code
            == 200
        )


@pytest.fixture
def served(settings: Settings, keys: Keys, model: Model) -> Iterator[str]:
    with serving(create_app(settings, run_duties=False)) as base:
        yield base


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_stream_shows_each_step_live_and_ends_with_the_outputs(
    served: str, keys: Keys
) -> None:
    client = httpx.Client(base_url=served, headers=auth(keys.alice_token))
    job = client.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}).json()
    stream = Stream(f"{served}/v1/jobs/{job['id']}/events", keys.alice_token)
    assert stream.status == 200
    assert stream.next()["event"] == "queued"
    worker = Worker(httpx.Client(base_url=served, timeout=WAIT), keys.worker_token)
    attempt = worker.claim()
    assert stream.next()["data"] == {"status": "running", "attempt": 1}
    worker.beat(attempt, 1, 2)
    worker.beat(attempt, 1, 2)  # a lease-only beat repeats the step: no event
    worker.beat(attempt, 2, 2)
    assert stream.next()["data"] == {"step": 1, "total_steps": 2, "fraction": 0.5}
    assert stream.next()["data"]["fraction"] == 1.0
    worker.complete(attempt)
    final = stream.next()
    assert final["event"] == final["sse_event"] == "succeeded"
    assert final["job"]["status"] == "succeeded" and final["job"]["outputs"][0]["seed"] == 7
    assert stream.ended()

    # Resuming after the `running` event replays exactly what came after it.
    running_id = int(final["sse_id"]) - 3
    resumed = Stream(
        f"{served}/v1/jobs/{job['id']}/events", keys.alice_token, {"Last-Event-ID": str(running_id)}
    )
    assert [resumed.next()["event"] for _ in range(3)] == ["progress", "progress", "succeeded"]
    assert resumed.ended()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failed_and_cancelled_jobs_end_their_streams_and_tenants_see_only_their_own(
    settings: Settings, keys: Keys, model: Model
) -> None:
    with TestClient(create_app(settings, run_duties=False)) as api:
        alice, bob = auth(keys.alice_token), auth(keys.bob_token)
        body = {"kind": "txt2img", "params": PARAMS}
        doomed = api.post("/v1/jobs", json=body, headers=alice).json()["id"]
        worker = Worker(api, keys.worker_token)
        worker.fail(worker.claim())
        cancelled = api.post("/v1/jobs", json=body, headers=alice).json()["id"]
        api.post(f"/v1/jobs/{cancelled}/cancel", headers=alice)
        # Final jobs: the stream sends the history and closes, so a plain GET reads it whole.
        failed_events = _events(api.get(f"/v1/jobs/{doomed}/events", headers=alice).text)
        assert [e["event"] for e in failed_events] == ["queued", "running", "failed"]
        assert failed_events[-1]["data"]["error"]["message"].endswith("boom")
        cancelled_events = _events(api.get(f"/v1/jobs/{cancelled}/events", headers=alice).text)
        assert [e["event"] for e in cancelled_events] == ["queued", "cancelled"]
        assert api.get(f"/v1/jobs/{doomed}/events", headers=bob).status_code == 404
        assert api.get("/v1/jobs/nope/events", headers=alice).status_code == 404
        assert api.get(f"/v1/jobs/{doomed}/events?after=x", headers=alice).status_code == 422


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in parse_events(text.splitlines())]


def test_two_replicas_on_postgresql_stream_what_the_other_replica_records(
    empty_pg: PgFleet, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=empty_pg.url)
    with (
        serving(create_app(settings, run_duties=False)) as replica_a,
        serving(create_app(settings, run_duties=False)) as replica_b,
    ):
        client = httpx.Client(base_url=replica_a, headers=auth(empty_pg.client_key))
        feed = Stream(f"{replica_b}/v1/events", empty_pg.client_key)
        job = client.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}).json()
        stream = Stream(f"{replica_b}/v1/jobs/{job['id']}/events", empty_pg.client_key)
        assert stream.next()["event"] == "queued"
        worker = Worker(httpx.Client(base_url=replica_a, timeout=WAIT), empty_pg.worker_key)
        attempt = worker.claim()
        assert stream.next()["event"] == "running"
        worker.beat(attempt, 1, 2)
        assert stream.next()["data"]["step"] == 1
        worker.complete(attempt)
        final = stream.next()
        assert final["event"] == "succeeded" and final["job"]["outputs"]
        assert stream.ended()
        seen = [feed.next()["event"] for _ in range(4)]
        feed.close()  # a live feed stays open: the servers would wait for it on exit
    assert seen == ["queued", "running", "progress", "succeeded"]
