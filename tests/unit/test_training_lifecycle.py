"""The train_lora kind on the orchestrator, on SQLite and PostgreSQL: admission of datasets and
hyperparameters, the `checkpoint` transition (fenced, keep_last), resume and corrupt
fallbacks, the loss curve, registration of the trained LoRA and the bill."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from imagefleet.config import Settings
from imagefleet.errors import InvalidField, NotFound, StaleAttempt
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.protocol import JobStatus, ModelKind
from imagefleet.store.database import Database
from imagefleet.store.models import find_model, register_model
from imagefleet.store.tables import webhook_deliveries
from imagefleet.training_protocol import ResumeReport, SkippedCheckpoint
from imagefleet.worker_protocol import (
    CompletedOutput,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    WorkerFailureCode,
)
from tests.conftest import Clock, Keys
from tests.training_jobs import (
    base_model_fixture,  # noqa: F401 (the fixture `base_model`)
    checkpoint,
    claim_training,
    dataset_zip,
    png,
    submit_training,
    upload,
)

pytestmark = pytest.mark.usefixtures("base_model")


def test_a_dataset_zip_is_checked_at_upload_and_its_uncaptioned_images_counted(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    row = asyncio.run(
        lifecycle.upload_input(keys.alice, dataset_zip(captions=False), "application/zip")
    )
    assert (row.images, row.uncaptioned, row.width) == (3, 3, 0)
    with pytest.raises(InvalidField, match="not a readable zip"):
        asyncio.run(lifecycle.upload_input(keys.alice, b"PK\x03\x04junk", "application/zip"))


def test_submit_refuses_uncaptioned_datasets_without_a_prompt_and_images_as_datasets(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    bare = upload(lifecycle, keys.alice, dataset_zip(captions=False), "application/zip")
    with pytest.raises(InvalidField, match="3 of the dataset's 3 images have no caption") as exc:
        submit_training(lifecycle, keys.alice, dataset=bare, instance_prompt=None)
    assert exc.value.loc[-1] == "instance_prompt"
    image = upload(lifecycle, keys.alice, png(1), "image/png")
    with pytest.raises(InvalidField, match="not a dataset zip"):
        submit_training(lifecycle, keys.alice, dataset=image)
    with pytest.raises(NotFound):
        submit_training(lifecycle, keys.bob, dataset=bare)  # alice's input


def test_a_base_model_of_the_wrong_kind_is_refused(
    lifecycle: JobLifecycle, keys: Keys, db: Database
) -> None:
    with db.write() as conn:
        register_model(
            conn, name="a-lora", kind="lora", source="/l", sha256="e" * 64, size_bytes=1, now=1
        )
    with pytest.raises(InvalidField, match="lora"):
        submit_training(lifecycle, keys.alice, base_model="a-lora")


def test_instance_images_and_a_fixed_seed_are_admitted(lifecycle: JobLifecycle, keys: Keys) -> None:
    images = [upload(lifecycle, keys.alice, png(i), "image/png") for i in range(2)]
    job_id = submit_training(lifecycle, keys.alice, instance_images=images, seed=None)
    row = lifecycle.get(keys.alice, job_id)
    assert isinstance(row.params["seed"], int)
    assignment = claim_training(lifecycle, keys.worker)
    assert [i.name for i in assignment.inputs] == ["instance_image_0", "instance_image_1"]
    assert assignment.checkpoints == []


def test_checkpoints_beyond_keep_last_are_deleted_from_storage(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    submit_training(lifecycle, keys.alice, keep_last=2)
    attempt = claim_training(lifecycle, keys.worker).attempt_id
    receipts = [checkpoint(lifecycle, keys.worker, attempt, step) for step in (2, 4, 6)]
    assert receipts[-1].kept_steps == [6, 4] and receipts[-1].deleted_steps == [2]
    stored = lifecycle.artifacts
    assert (
        stored.head(
            f"jobs/{attempt_job(lifecycle, keys, attempt)}/{attempt}/checkpoints/0000002.zip"
        )
        is None
    )
    assert checkpoint(lifecycle, keys.worker, attempt, 6).deleted_steps == []  # a retry
    with pytest.raises(InvalidField, match="from 1 to 9"):
        checkpoint(lifecycle, keys.worker, attempt, 10)


def attempt_job(lifecycle: JobLifecycle, keys: Keys, attempt_id: str) -> str:
    return lifecycle.check_current(keys.worker, attempt_id).id


def test_a_stale_attempt_cannot_checkpoint_and_leaves_no_file(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock, settings: Settings
) -> None:
    job_id = submit_training(lifecycle, keys.alice)
    first = claim_training(lifecycle, keys.worker, node="a").attempt_id
    checkpoint(lifecycle, keys.worker, first, 2)
    clock.advance(settings.lease_seconds + 1)
    assert lifecycle.reap_expired() == 1
    with pytest.raises(StaleAttempt):
        checkpoint(lifecycle, keys.worker, first, 4)
    assert lifecycle.artifacts.head(f"jobs/{job_id}/{first}/checkpoints/0000004.zip") is None
    second = claim_training(lifecycle, keys.worker, node="b")
    assert [c.step for c in second.checkpoints] == [2]


def test_a_new_attempt_gets_the_newest_checkpoints_and_corrupt_ones_are_recorded(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit_training(lifecycle, keys.alice, keep_last=3)
    first = claim_training(lifecycle, keys.worker, node="a").attempt_id
    for step in (2, 4, 6):
        checkpoint(lifecycle, keys.worker, first, step)
    lifecycle.fail(
        keys.worker, first, FailRequest(code=WorkerFailureCode.worker_shutdown, message="spot")
    )
    second = claim_training(lifecycle, keys.worker, node="b")
    assert [c.step for c in second.checkpoints] == [6, 4, 2]
    newest = second.checkpoints[0]
    report = ResumeReport(
        resumed_from_step=4,
        skipped=[SkippedCheckpoint(checkpoint_id=newest.checkpoint_id, reason="sha256 differs")],
    )
    lifecycle.report_resume(keys.worker, second.attempt_id, report)
    view = lifecycle.training_view(keys.alice, job_id)
    assert view.attempts[1].resumed_from_step == 4
    assert view.attempts[1].notes == [
        "checkpoint at step 6 passed over: sha256 differs",
        "resumed from the checkpoint at step 4",
    ]
    assert [c.step for c in view.checkpoints] == [4, 2]
    assert view.interruptions_survived == 1 and view.steps_lost == 2


def test_heartbeats_build_the_loss_curve_and_the_eta(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job_id = submit_training(lifecycle, keys.alice)
    attempt = claim_training(lifecycle, keys.worker).attempt_id
    for step in (1, 2, 2, 4):
        clock.advance(1.0)
        beat = HeartbeatRequest(step=step, total_steps=10, loss=0.5 / step, learning_rate=1e-3)
        lifecycle.heartbeat(keys.worker, attempt, beat)
    view = lifecycle.training_view(keys.alice, job_id)
    assert [p.step for p in view.loss_curve] == [1, 2, 4]
    assert view.steps_done == 4 and view.loss == pytest.approx(0.125)
    assert view.eta_seconds == pytest.approx(6 / (3 / 3))


def test_the_trained_lora_is_registered_and_every_checkpoint_deleted_on_success(
    lifecycle: JobLifecycle, keys: Keys, db: Database, settings: Settings, clock: Clock
) -> None:
    lifecycle.settings = settings.model_copy(
        update={"gpu_prices": {"RTX 4090": 0.36}, "webhook_allow_private": True}
    )
    job_id = submit_training(
        lifecycle,
        keys.alice,
        keep_last=2,
        webhook={"url": "http://127.0.0.1:9/hook", "events": ["checkpoint", "succeeded"]},
    )
    attempt = claim_training(lifecycle, keys.worker, gpu="RTX 4090").attempt_id
    checkpoint(lifecycle, keys.worker, attempt, 2)
    checkpoint(lifecycle, keys.worker, attempt, 4)
    asyncio.run(
        lifecycle.upload_output(
            keys.worker, attempt, 0, "application/octet-stream", chunks_of(b"lora-bytes")
        )
    )
    clock.advance(100.0)
    lifecycle.complete(keys.worker, attempt, CompleteRequest(outputs=[CompletedOutput(index=0)]))
    with db.read() as conn:
        model = find_model(conn, "sks-cat")
        events = conn.execute(select(webhook_deliveries.c.event, webhook_deliveries.c.payload))
        sent = [(e, json.loads(p).get("checkpoint")) for e, p in events]
    assert model is not None and model.kind is ModelKind.lora
    assert model.base is not None and model.base.value == "sd15"
    assert model.trigger_words == ("a photo of sks cat",)
    assert lifecycle.artifacts.read(model.source.rpartition("artifacts/")[2]) == b"lora-bytes"
    assert sent == [("checkpoint", {"step": 2}), ("checkpoint", {"step": 4}), ("succeeded", None)]
    assert not [k for k in stored_keys(lifecycle) if "/checkpoints/" in k]
    view = lifecycle.training_view(keys.alice, job_id)
    assert view.status is JobStatus.succeeded and view.checkpoints == []
    assert view.model is not None and view.model.name == "sks-cat"
    assert view.billable_seconds == pytest.approx(100.0)
    assert view.cost == pytest.approx(100 * 0.36 / 3600)
    assert view.cost_per_step == pytest.approx(view.cost / 10)


def chunks_of(data: bytes):  # type: ignore[no-untyped-def]
    async def gen():  # type: ignore[no-untyped-def]
        yield data

    return gen()


def stored_keys(lifecycle: JobLifecycle) -> list[str]:
    root = lifecycle.settings.artifacts_path
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def test_a_cancelled_training_job_has_its_checkpoints_swept(
    lifecycle: JobLifecycle, keys: Keys, db: Database
) -> None:
    from imagefleet.orchestrator.checkpoint_transitions import sweep_final_checkpoints

    job_id = submit_training(lifecycle, keys.alice)
    attempt = claim_training(lifecycle, keys.worker).attempt_id
    checkpoint(lifecycle, keys.worker, attempt, 2)
    assert sweep_final_checkpoints(db, lifecycle.artifacts) == 0  # still running: kept
    lifecycle.cancel(keys.alice, job_id)
    assert sweep_final_checkpoints(db, lifecycle.artifacts) == 1
    assert not [k for k in stored_keys(lifecycle) if "/checkpoints/" in k]
    assert lifecycle.training_view(keys.alice, job_id).checkpoints == []


def test_a_lora_trained_on_an_sdxl_base_is_registered_as_sdxl_and_usable_by_sdxl_jobs(
    lifecycle: JobLifecycle, keys: Keys, db: Database
) -> None:
    from imagefleet.kinds.txt2img import Txt2ImgJob

    with db.write() as conn:
        register_model(
            conn,
            name="xl",
            kind="checkpoint",
            source="/models/xl",
            sha256="e" * 64,
            size_bytes=1,
            now=1.0,
            base="sdxl",
        )
    submit_training(lifecycle, keys.alice, base_model="xl", output_name="xl-cat", resolution=64)
    attempt = claim_training(lifecycle, keys.worker).attempt_id
    asyncio.run(
        lifecycle.upload_output(
            keys.worker, attempt, 0, "application/octet-stream", chunks_of(b"xl-lora")
        )
    )
    lifecycle.complete(keys.worker, attempt, CompleteRequest(outputs=[CompletedOutput(index=0)]))
    with db.read() as conn:
        model = find_model(conn, "xl-cat")
    assert model is not None and model.base is not None and model.base.value == "sdxl"
    params = {"prompt": "a photo of sks cat", "width": 64, "height": 64}
    job = Txt2ImgJob.model_validate(
        {"params": {**params, "model": "xl", "loras": [{"name": "xl-cat"}]}}
    )
    row = lifecycle.submit(keys.alice, job)[0]
    assert row.kind == "txt2img"
    with pytest.raises(InvalidField, match="sdxl"):  # an SD 1.5 job cannot use it
        wrong = {**params, "model": "demo", "loras": [{"name": "xl-cat"}]}
        lifecycle.submit(keys.alice, Txt2ImgJob.model_validate({"params": wrong}))
