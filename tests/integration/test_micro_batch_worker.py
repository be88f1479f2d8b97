"""Micro-batches on a real worker: compatible jobs claimed together run as one pipeline call
and give the same pixels as each job alone; each keeps its own attempt, seeds and outputs, and
a job cancelled while its batch runs is never completed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from imagefleet.config import Settings
from imagefleet.hashing import path_sha256
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import register_model
from imagefleet.store.tables import attempts, jobs
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.loop import Worker, WorkerConfig
from imagefleet.worker.micro_batch import run_batch
from tests.tiny_zoo import tiny_zoo

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
BASE = {"model": "tiny", "width": 64, "height": 64, "steps": 3, "scheduler": "euler_a"}
# Prompts of one length (one 77-token chunk) stack into one call; a negative prompt too.
JOBS: list[dict[str, Any]] = [
    {"prompt": "a photo of the cat", "seed": 11},
    {"prompt": "a red lighthouse at dusk", "seed": 22, "num_images": 2},
    {"prompt": "a bowl of fruit", "seed": 33, "negative_prompt": "blurry"},
    {"prompt": "a photo of the cat", "seed": 44},
]


class Fleet:
    def __init__(self, api: TestClient, db: Database, client: str, worker: str, cache: Path):
        self.api, self.db, self.worker_token, self.cache = api, db, worker, cache
        self.auth = {"Authorization": f"Bearer {client}"}
        self.engine = ManagedEngine("cpu")

    def submit(self, params: dict[str, Any]) -> str:
        body = {"kind": "txt2img", "params": {**BASE, **params}}
        response = self.api.post("/v1/jobs", json=body, headers=self.auth)
        assert response.status_code in (200, 201, 202), response.text
        job_id: str = response.json()["id"]
        return job_id

    def worker(self, max_batch: int) -> Worker:
        config = WorkerConfig(
            orchestrator_url=str(self.api.base_url),
            key=self.worker_token,
            cache_dir=self.cache,
            claim_wait_seconds=0,
            max_batch=max_batch,
        )
        worker = Worker(config, engine=self.engine)  # type: ignore[arg-type]
        worker.client.http.close()
        worker.client.http = TestClient(
            self.api.app, headers={"Authorization": f"Bearer {self.worker_token}"}
        )
        return worker

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/v1/jobs/{job_id}", headers=self.auth).json()
        return found

    def pixels(self, job_id: str) -> list[np.ndarray]:
        count = len(self.job(job_id)["outputs"])
        return [
            np.asarray(
                Image.open(
                    io.BytesIO(
                        self.api.get(f"/v1/jobs/{job_id}/outputs/{i}", headers=self.auth).content
                    )
                ).convert("RGB")
            ).astype(np.int16)
            for i in range(count)
        ]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    settings = Settings(data_dir=tmp_path / "data", rate_limit_per_second=0)
    db = Database(settings.database_url)
    db.upgrade()
    weights = tiny_zoo().sd15
    sha, size = path_sha256(weights)
    with db.write() as conn:
        _, client = create_key(conn, name="c", scope="client", tier="free", now=1.0)
        _, worker = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        register_model(
            conn,
            name="tiny",
            kind="checkpoint",
            source=str(weights),
            sha256=sha,
            size_bytes=size,
            now=1.0,
        )
    with TestClient(create_app(settings, run_duties=False)) as api:
        yield Fleet(api, db, client, worker, tmp_path / "cache")
    db.dispose()


def test_a_micro_batch_gives_each_job_the_pixels_it_gets_alone(fleet: Fleet) -> None:
    batched = [fleet.submit(params) for params in JOBS]
    fleet.worker(max_batch=4).run(max_jobs=4)
    alone = [fleet.submit(params) for params in JOBS]
    fleet.worker(max_batch=1).run(max_jobs=4)

    with fleet.db.read() as conn:
        placements = dict(conn.execute(select(jobs.c.id, jobs.c.placement)).all())
        tries = conn.execute(select(attempts.c.job_id)).scalars().all()
    assert sorted(tries) == sorted(batched + alone)  # one attempt each
    together = [j for j in batched if (placements[j] or "").startswith("micro-batch with job")]
    assert len(together) == 3  # the first was ranked; its three mates rode along
    for params, one, other in zip(JOBS, batched, alone, strict=True):
        done = fleet.job(one)
        assert done["status"] == "succeeded", done
        count = params.get("num_images", 1)
        assert [o["seed"] for o in done["outputs"]] == [params["seed"] + i for i in range(count)]
        mine, reference = fleet.pixels(one), fleet.pixels(other)
        assert len(mine) == len(reference) == count
        for left, right in zip(mine, reference, strict=True):
            assert np.abs(left - right).max() <= 1  # float rounding of the batched matmuls
    # Different seeds and prompts made different images: the batch did not repeat one.
    first, last = fleet.pixels(batched[0])[0], fleet.pixels(batched[3])[0]
    assert np.abs(first - last).mean() > 1.0


def test_a_job_cancelled_in_a_batch_is_not_completed_and_the_others_are(fleet: Fleet) -> None:
    ids = [fleet.submit(params) for params in JOBS[:3]]
    worker = fleet.worker(max_batch=3)
    answer = worker.client.claim(worker._claim_request())
    assert answer.assignment is not None and len(answer.more) == 2
    batch = [answer.assignment, *answer.more]
    cancelled = batch[1].job_id
    assert fleet.api.post(f"/v1/jobs/{cancelled}/cancel", headers=fleet.auth).status_code == 200

    run_batch(worker, batch)

    assert fleet.job(cancelled)["status"] == "cancelled"
    assert fleet.job(cancelled)["outputs"] == []
    for job_id in set(ids) - {cancelled}:
        assert fleet.job(job_id)["status"] == "succeeded"


class RefusesBoom:
    """A prompt rewriter (worker/plugins.py) that cannot handle one prompt: it fails the
    batched call, so the worker falls back to running the batch's jobs one by one."""

    def rewrite(self, prompt: str) -> str:
        if "boom" in prompt:
            raise ValueError("this rewriter cannot rewrite 'boom'")
        return prompt


def test_a_failed_batch_call_runs_its_jobs_one_by_one_each_failing_alone(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFLEET_WORKER_PROMPT_REWRITER", f"{__name__}:RefusesBoom")
    good = fleet.submit(JOBS[0])
    bad = fleet.submit({**JOBS[2], "prompt": "a boom"})
    also_good = fleet.submit(JOBS[3])

    fleet.worker(max_batch=3).run(max_jobs=3)

    assert fleet.job(good)["status"] == fleet.job(also_good)["status"] == "succeeded"
    failed = fleet.job(bad)
    assert failed["status"] == "failed", failed
    assert "boom" in failed["error"]["message"]
    with fleet.db.read() as conn:
        placements = conn.execute(select(jobs.c.placement)).scalars().all()
    assert sum("micro-batch" in (p or "") for p in placements) == 2  # claimed as one batch
