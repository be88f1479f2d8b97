"""Training checkpoints put straight into an S3-compatible bucket (a real SeaweedFS) through a
presigned URL (orchestrator/checkpoint_direct.py): the worker handler's real client over HTTP
puts and reports them, the orchestrator checks each object before the fenced `checkpoint`
transition records it, and the next attempt is offered it. With the local store there is no
URL and the archive goes through the API as before."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from imagefleet.checkpoint_protocol import StoredCheckpoint
from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.models import Model
from imagefleet.worker.handlers.train_lora import TrainLoraHandler
from imagefleet.worker.orchestrator_client import LeaseLost, OrchestratorClient
from imagefleet.worker.training.archive import CHECKPOINT_FILES
from imagefleet.worker_protocol import (
    ClaimRequest,
    FailRequest,
    WorkerCapabilities,
    WorkerFailureCode,
)
from tests.conftest import Keys
from tests.harness.servers import serving
from tests.integration.test_s3_api import s3_env
from tests.seaweed import SeaweedS3
from tests.training_jobs import claim_training, dataset_zip, submit_training, train_params


def checkpoint_folder(root: Path, marker: str) -> Path:
    """A folder holding exactly the files a checkpoint archive may hold."""
    root.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (root / name).write_text(f"{marker}:{name}")
    return root


def claim(client: OrchestratorClient) -> Any:
    request = ClaimRequest(
        worker_id="w-a",
        node_id="node-a",
        capabilities=WorkerCapabilities(gpu_name="cpu", kinds=["train_lora"]),
    )
    assignment = client.claim(request).assignment
    assert assignment is not None
    return assignment


def test_checkpoints_go_straight_to_the_bucket_and_are_checked_before_recording(
    settings: Settings,
    keys: Keys,
    model: Model,
    seaweed: SeaweedS3,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bucket = seaweed.create_bucket()
    for name, value in s3_env(seaweed, bucket).items():
        monkeypatch.setenv(name, value)
    s3 = seaweed.client()
    with serving(create_app(settings, run_duties=False)) as url:
        owner = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys.alice_token}"})
        dataset = owner.post(
            "/v1/inputs", content=dataset_zip(), headers={"Content-Type": "application/zip"}
        ).json()["id"]
        params = train_params(dataset=dataset, steps=10, keep_last=1)
        job = owner.post("/v1/jobs", json={"kind": "train_lora", "params": params}).json()
        worker = OrchestratorClient(url, keys.worker_token, retry_for_seconds=0)
        assignment = claim(worker)
        attempt = assignment.attempt_id
        ctx = SimpleNamespace(client=worker, assignment=assignment)

        # The handler's own checkpoint callback: presigned PUT, then the report.
        TrainLoraHandler._checkpoint(ctx, 2, checkpoint_folder(tmp_path / "s2", "two"))  # type: ignore[arg-type]
        TrainLoraHandler._checkpoint(ctx, 4, checkpoint_folder(tmp_path / "s4", "four"))  # type: ignore[arg-type]
        prefix = f"fleet/jobs/{job['id']}/{attempt}/checkpoints/"
        stored = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        assert [item["Key"][len(prefix) :] for item in stored] == ["0000004.zip"]  # keep_last 1
        view = owner.get(f"/v1/jobs/{job['id']}/training").json()
        assert [c["step"] for c in view["checkpoints"]] == [4]

        # Reported but never put: refused, nothing recorded.
        fake = StoredCheckpoint(size_bytes=10, sha256="0" * 64)
        with pytest.raises(RuntimeError, match=r"answered 422.*did not arrive"):
            worker.report_stored_checkpoint(attempt, 6, fake)
        # Put, but not the size reported: refused and deleted.
        target = worker.checkpoint_target(attempt, 6)
        assert target.url is not None and target.url.startswith(seaweed.endpoint_url)
        worker.put_direct(target.url, b"short", "application/zip")
        with pytest.raises(RuntimeError, match=r"answered 422.*not the 10 reported"):
            worker.report_stored_checkpoint(attempt, 6, fake)
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "0000006")

        # The attempt loses the job after putting a checkpoint: refused, the object deleted.
        target = worker.checkpoint_target(attempt, 6)
        assert target.url is not None
        worker.put_direct(target.url, b"0123456789", "application/zip")
        worker.fail(attempt, FailRequest(code=WorkerFailureCode.worker_shutdown, message="bye"))
        with pytest.raises(LeaseLost):
            worker.report_stored_checkpoint(attempt, 6, fake)
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "0000006")
        with pytest.raises(LeaseLost):
            worker.checkpoint_target(attempt, 8)
        # ...but a late retry of the report of step 4, recorded in time, leaves its file be.
        retried = StoredCheckpoint(size_bytes=stored[0]["Size"], sha256="0" * 64)
        with pytest.raises(LeaseLost):
            worker.report_stored_checkpoint(attempt, 4, retried)

        # The next attempt is offered the step-4 checkpoint, byte for byte.
        again = claim(worker)
        assert [c.step for c in again.checkpoints] == [4]
        offered = again.checkpoints[0]
        data = worker.fetch(offered.url)
        assert hashlib.sha256(data).hexdigest() == offered.sha256


def test_with_the_local_store_there_is_no_url_and_checkpoints_go_through_the_api(
    lifecycle: JobLifecycle, keys: Keys, model: Model
) -> None:
    submit_training(lifecycle, keys.alice)
    assignment = claim_training(lifecycle, keys.worker)
    target = lifecycle.checkpoint_upload_target(keys.worker, assignment.attempt_id, 2)
    assert target.url is None
