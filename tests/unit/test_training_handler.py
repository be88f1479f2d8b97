"""The train_lora handler's resume: the newest checkpoint that reads back wins, and every one
passed over is reported with its reason (for the attempt history)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker.handlers.train_lora import find_resume_point
from imagefleet.worker.training.archive import pack_checkpoint
from imagefleet.worker_protocol import Assignment, ResumeCheckpoint
from tests.training_support import CheckpointStore, tiny_params, trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def offer(
    checkpoint_id: int, step: int, data: bytes, sha256: str | None = None
) -> ResumeCheckpoint:
    return ResumeCheckpoint(
        checkpoint_id=checkpoint_id,
        step=step,
        url=f"/checkpoints/{checkpoint_id}",
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )


def test_corrupt_and_altered_checkpoints_fall_back_to_the_newest_sound_one(
    demo_dir: Path, tmp_path: Path
) -> None:
    params = tiny_params(steps=8, checkpoint_every=2)
    store = CheckpointStore(tmp_path / "store")
    trainer(demo_dir, tmp_path / "first", params).train(on_checkpoint=store)
    packed = {
        step: pack_checkpoint(store.path(step), tmp_path / f"{step}.zip").read_bytes()
        for step in (2, 4, 6)
    }
    truncated = packed[6][: len(packed[6]) // 2]  # uploaded broken: its hash is its own
    files = {"/checkpoints/3": truncated, "/checkpoints/2": packed[4], "/checkpoints/1": packed[2]}
    checkpoints = [
        offer(3, 6, truncated),
        offer(2, 4, packed[4], sha256="0" * 64),  # altered in storage after it was recorded
        offer(1, 2, packed[2]),
    ]
    assignment = Assignment(
        job_id="j",
        attempt_id="a",
        fencing_token=2,
        lease_seconds=30,
        lease_expires_at=datetime.now(UTC),
        kind="train_lora",
        params={},
        models=[],
        checkpoints=checkpoints,
    )
    ctx = JobContext(
        assignment=assignment,
        engine=None,
        cache=None,  # type: ignore[arg-type]
        fetch=files.__getitem__,
        on_step=lambda step, total: None,
        should_stop=lambda: False,
    )
    identity = trainer(demo_dir, tmp_path / "second", params).identity
    point, skipped = find_resume_point(ctx, tmp_path / "resume", identity)
    assert point.state is not None and point.state.step == 2
    assert [s.checkpoint_id for s in skipped] == [3, 2]
    assert "not a readable checkpoint archive" in skipped[0].reason
    assert "does not match its recorded sha256" in skipped[1].reason


def test_a_worker_with_tracking_configured_logs_each_attempt_to_mlflow(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole handler on a real model cache and dataset zip, with
    IMAGEFLEET_TRAINING_TRACKING naming a local MLflow store (mlflow-skinny, offline)."""
    from mlflow.tracking import MlflowClient

    from imagefleet.hashing import path_sha256
    from imagefleet.protocol import ModelKind
    from imagefleet.worker.handlers.train_lora import HANDLER, TRACKING_ENV
    from imagefleet.worker.model_cache import ModelCache
    from imagefleet.worker_protocol import InputRef, ModelRef
    from tests.training_jobs import dataset_zip, train_params

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(TRACKING_ENV, f"mlflow:{uri}")
    data = dataset_zip()
    sha, size = path_sha256(demo_dir)
    assignment = Assignment(
        job_id="job-1",
        attempt_id="attempt-1",
        fencing_token=1,
        lease_seconds=30,
        lease_expires_at=datetime.now(UTC),
        kind="train_lora",
        params=train_params(dataset="ab12", steps=3, checkpoint_every=100),
        models=[
            ModelRef(
                name="demo",
                version=1,
                kind=ModelKind.checkpoint,
                source=str(demo_dir),
                sha256=sha,
                size_bytes=size,
            )
        ],
        inputs=[
            InputRef(
                name="dataset",
                input_id="ab12",
                url="/inputs/ab12",
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="application/zip",
                width=0,
                height=0,
            )
        ],
    )
    ctx = JobContext(
        assignment=assignment,
        engine=None,
        cache=ModelCache(tmp_path / "cache"),
        fetch={"/inputs/ab12": data}.__getitem__,
        on_step=lambda step, total: None,
        should_stop=lambda: False,
    )
    [output] = HANDLER.run(ctx)
    assert output.data

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("imagefleet").experiment_id])
    assert run.info.run_name == "job-1/attempt-1" and run.info.status == "FINISHED"
    assert run.data.tags["attempt_id"] == "attempt-1"
    assert run.data.tags["resumed_from_step"] == "0"
    assert run.data.params["rank"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
