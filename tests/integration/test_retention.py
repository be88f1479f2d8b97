"""Finished jobs and their files expire after the retention period, in bounded batches."""

from __future__ import annotations

from imagefleet.artifacts.local import LocalArtifactStore
from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.retention import purge_expired
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.worker_protocol import ClaimRequest, CompletedOutput, CompleteRequest
from tests.conftest import Clock, Keys


def finished_job(lifecycle: JobLifecycle, keys: Keys, store: LocalArtifactStore) -> tuple[str, str]:
    job = lifecycle.submit(
        keys.alice, Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="demo", width=64, height=64))
    )[0]
    assignment = lifecycle.claim(keys.worker, ClaimRequest(worker_id="w", node_id="n"))
    assert assignment
    key = f"jobs/{job.id}/{assignment.attempt_id}/0.png"
    store.path(key).parent.mkdir(parents=True, exist_ok=True)
    store.path(key).write_bytes(b"png")
    lifecycle.record_upload(
        keys.worker,
        assignment.attempt_id,
        index=0,
        key=key,
        size=3,
        sha256="0" * 64,
        content_type="image/png",
    )
    lifecycle.complete(
        keys.worker,
        assignment.attempt_id,
        CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=64, height=64)]),
    )
    return job.id, key


def test_old_finished_jobs_and_their_files_are_deleted_in_batches(
    lifecycle: JobLifecycle,
    keys: Keys,
    model: Model,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    store = LocalArtifactStore(settings.artifacts_path)
    old = [finished_job(lifecycle, keys, store) for _ in range(5)]
    clock.advance(3600)
    recent = finished_job(lifecycle, keys, store)
    queued = lifecycle.submit(
        keys.alice, Txt2ImgJob(params=Txt2ImgParams(prompt="y", model="demo", width=64, height=64))
    )[0]
    purged = purge_expired(db, store, older_than_seconds=1800, now=clock.now, batch_size=2)
    assert purged == 5
    assert all(not store.path(key).exists() for _, key in old)
    assert store.path(recent[1]).exists()
    remaining, _ = lifecycle.list_jobs(keys.alice, status=None, cursor=None, limit=50)
    assert {job.id for job in remaining} == {recent[0], queued.id}


def test_a_bounded_pass_stops_after_its_batches(
    lifecycle: JobLifecycle,
    keys: Keys,
    model: Model,
    db: Database,
    settings: Settings,
    clock: Clock,
) -> None:
    store = LocalArtifactStore(settings.artifacts_path)
    for _ in range(5):
        finished_job(lifecycle, keys, store)
    clock.advance(10)
    assert (
        purge_expired(db, store, older_than_seconds=5, now=clock.now, batch_size=2, max_batches=1)
        == 2
    )
    assert purge_expired(db, store, older_than_seconds=5, now=clock.now, batch_size=2) == 3
