"""The Python client (sync and async) against a real server: submit, stream, wait, download,
and retries on 429 honouring Retry-After."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from imagefleet.client import (
    ApiError,
    AsyncImageFleetClient,
    ImageFleetClient,
    JobEvent,
    JobStillRunning,
    RetryPolicy,
)
from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.harness.servers import serving

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}


@pytest.fixture
def served(settings: Settings, keys: Keys, model: Model) -> Iterator[str]:
    with serving(create_app(settings, run_duties=False)) as base:
        yield base


def run_one_job(base: str, worker_token: str) -> threading.Thread:
    """A hand-driven worker on a thread: claims the next job, reports both steps, completes."""

    def work() -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {worker_token}"}, timeout=30
        ) as http:
            claim = {"worker_id": "w", "node_id": "n", "wait_seconds": 20}
            attempt = http.post("/v1/worker/claim", json=claim).json()["assignment"]["attempt_id"]
            for step in (1, 2):
                beat = {"step": step, "total_steps": 2}
                http.post(f"/v1/worker/attempts/{attempt}/heartbeat", json=beat)
            http.put(
                f"/v1/worker/attempts/{attempt}/outputs/0",
                content=b"\x89PNG-ish",
                headers={"Content-Type": "image/png"},
            )
            outputs = [{"index": 0, "seed": 3, "width": 64, "height": 64}]
            http.post(f"/v1/worker/attempts/{attempt}/complete", json={"outputs": outputs})

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_the_sync_client_follows_a_job_through_its_stream_and_downloads_it(
    served: str, keys: Keys
) -> None:
    with ImageFleetClient(served, keys.alice_token) as client:
        job = client.submit("txt2img", PARAMS)
        worker = run_one_job(served, keys.worker_token)
        seen: list[JobEvent] = []
        done = client.wait_streaming(job.id, timeout=60, on_event=seen.append)
        worker.join(timeout=30)
        assert done.status.value == "succeeded" and done.outputs[0].seed == 3
        assert [e.event.value for e in seen] == [
            "queued",
            "running",
            "progress",
            "progress",
            "succeeded",
        ]
        assert client.download(job.id, 0) == b"\x89PNG-ish"
        # Resuming after the first progress event replays only what followed it.
        resumed = [e.event.value for e in client.stream(job.id, after=seen[2].id)]
        assert resumed == ["progress", "succeeded"]


def test_the_async_client_submits_waits_and_downloads(served: str, keys: Keys) -> None:
    async def scenario() -> tuple[str, bytes, list[str]]:
        async with AsyncImageFleetClient(served, keys.alice_token) as client:
            job = await client.submit("txt2img", PARAMS, idempotency_key="once")
            again = await client.submit("txt2img", PARAMS, idempotency_key="once")
            assert again.id == job.id  # a retried submit returns the first job
            worker = run_one_job(served, keys.worker_token)
            kinds: list[str] = []
            done = await client.wait(job.id, timeout=60, on_event=lambda e: kinds.append(e.event))
            await asyncio.to_thread(worker.join, 30)
            return done.status.value, await client.download(job.id, 0), kinds

    status, data, kinds = asyncio.run(scenario())
    assert status == "succeeded" and data == b"\x89PNG-ish"
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"


def test_a_wait_that_runs_out_raises_with_the_job_still_queued(served: str, keys: Keys) -> None:
    with ImageFleetClient(served, keys.alice_token) as client:
        job = client.submit("txt2img", PARAMS)
        with pytest.raises(JobStillRunning) as late:
            client.wait_streaming(job.id, timeout=0.5)
    assert late.value.job.status.value == "queued"


def test_a_rate_limited_request_is_retried_after_the_servers_retry_after(
    settings: Settings, keys: Keys, model: Model
) -> None:
    strict = settings.model_copy(update={"rate_limit_per_second": 1.0, "rate_limit_burst": 1})
    with serving(create_app(strict, run_duties=False)) as base:
        patient = ImageFleetClient(base, keys.alice_token)
        impatient = ImageFleetClient(base, keys.alice_token, retry=RetryPolicy(max_retries=0))
        assert patient.account().name == "alice"
        with pytest.raises(ApiError) as refused:
            impatient.account()
        assert refused.value.status == 429
        assert patient.account().name == "alice"  # refused once, retried after Retry-After
