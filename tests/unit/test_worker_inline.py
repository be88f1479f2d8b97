"""The worker sends small outputs inside its complete call (one request, no upload), and its
next claim with each completion (`next`): a worker in a busy fleet claims once, then gets each
next job from the completion of the last."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.protocol import JobStatus, Strict
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import register_model
from imagefleet.worker.loop import Worker, WorkerConfig
from imagefleet.worker.orchestrator_client import OrchestratorClient
from imagefleet.worker_protocol import (
    AttemptResult,
    ClaimRequest,
    InlineCompleteRequest,
    InlineOutput,
    StageTimings,
)
from tests.chaos_engine import SleepEngine
from tests.load import TINY_PNG_BASE64

PARAMS = {"prompt": "a lighthouse", "model": "tiny", "width": 64, "height": 64, "steps": 2}


@dataclass
class Orchestrator:
    """A real orchestrator app on a fresh SQLite store, its requests' paths recorded."""

    api: TestClient
    client_token: str
    worker_token: str
    cache: Path
    calls: list[str] = field(default_factory=list)

    def submit(self) -> str:
        auth = {"Authorization": f"Bearer {self.client_token}"}
        body = {"kind": "txt2img", "params": PARAMS}
        job_id: str = self.api.post("/v1/jobs", json=body, headers=auth).json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {self.client_token}"}
        found: dict[str, Any] = self.api.get(f"/v1/jobs/{job_id}", headers=auth).json()
        return found

    def worker(self) -> Worker:
        config = WorkerConfig(
            orchestrator_url=str(self.api.base_url),
            key=self.worker_token,
            cache_dir=self.cache,
            claim_wait_seconds=0,
        )
        worker = Worker(config, engine=SleepEngine())  # type: ignore[arg-type]
        worker.engine.sleep_min = worker.engine.sleep_max = 0.0  # type: ignore[attr-defined]
        worker.client.http.close()
        worker.client.http = TestClient(
            self.api.app, headers={"Authorization": f"Bearer {self.worker_token}"}
        )
        return worker

    def called(self, suffix: str) -> int:
        return sum(path.endswith(suffix) for path in self.calls)


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    settings = Settings(data_dir=tmp_path / "data", rate_limit_per_second=0)
    db = Database(settings.database_url)
    db.upgrade()
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"not really weights: the sleep engine never reads them")
    with db.write() as conn:
        _, client_token = create_key(conn, name="c", scope="client", tier="free", now=1.0)
        _, worker_token = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        register_model(
            conn,
            name="tiny",
            kind="checkpoint",
            source=str(weights),
            sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
            size_bytes=weights.stat().st_size,
            now=1.0,
        )
    db.dispose()
    app = create_app(settings, run_duties=False)
    calls: list[str] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await app(scope, receive, send)

    with TestClient(recording) as api:
        yield Orchestrator(api, client_token, worker_token, tmp_path / "cache", calls)


def test_a_worker_completes_a_small_job_in_one_call_without_uploading(
    orchestrator: Orchestrator,
) -> None:
    job_id = orchestrator.submit()
    orchestrator.worker().run(max_jobs=1)
    done = orchestrator.job(job_id)
    assert done["status"] == "succeeded", done
    assert len(done["outputs"]) == 1
    assert not [path for path in orchestrator.calls if "/outputs/" in path]
    assert orchestrator.called("/complete-inline") == 1


def test_a_busy_worker_claims_once_then_takes_each_job_from_its_last_completion(
    orchestrator: Orchestrator,
) -> None:
    jobs = [orchestrator.submit() for _ in range(4)]
    orchestrator.worker().run(max_jobs=3)
    assert [orchestrator.job(job_id)["status"] for job_id in jobs] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "queued",  # the third completion asked for nothing: the worker was at max_jobs
    ]
    assert orchestrator.called("/v1/worker/claim") == 1
    assert orchestrator.called("/complete-inline") == 3


def test_a_stopped_worker_hands_back_the_job_its_last_completion_brought(
    orchestrator: Orchestrator,
) -> None:
    job_id = orchestrator.submit()
    worker = orchestrator.worker()
    request = ClaimRequest(worker_id=worker.config.worker_id, node_id="n")
    brought = worker.client.claim(request)  # as a completion's `next` would bring it
    assert brought.assignment is not None
    worker._following = brought
    worker.request_stop()  # before the loop acted on it
    worker.run()
    assert orchestrator.job(job_id)["status"] == JobStatus.queued  # back at once, no lease wait
    assert orchestrator.called("/fail") == 1


class _OldInlineComplete(Strict):
    """complete-inline's body as an orchestrator from before `next` declared it."""

    outputs: list[InlineOutput]
    timings: StageTimings


def test_a_worker_drops_next_for_an_orchestrator_that_does_not_know_it() -> None:
    old = FastAPI()
    bodies: list[dict[str, Any]] = []

    @old.post("/v1/worker/attempts/{attempt_id}/complete-inline")
    def complete_inline(attempt_id: str, body: _OldInlineComplete) -> dict[str, str]:
        bodies.append(body.model_dump())
        return {"job_id": "j", "job_status": "succeeded"}

    client = OrchestratorClient("http://old", "key")
    client.http.close()
    client.http = TestClient(old)
    output = InlineOutput(index=0, seed=1, width=1, height=1, data_base64=TINY_PNG_BASE64)
    request = InlineCompleteRequest(outputs=[output], next=ClaimRequest(worker_id="w", node_id="n"))
    first = client.complete_inline("a1", request)
    assert first == AttemptResult(job_id="j", job_status=JobStatus.succeeded)
    assert not client.follows_completions  # later completions go without it
    assert len(bodies) == 1
