"""The `checkpoint` transition racing completion and the lease reaper on PostgreSQL (where
transactions really run at once). Whatever wins, what the worker was told holds: a checkpoint
answered 200 is recorded (and offered to the next attempt), one answered 409 left neither a
row nor a file, and a completed job keeps no checkpoint at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from imagefleet.errors import StaleAttempt
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.protocol import JobStatus
from imagefleet.store.database import Database
from imagefleet.store.models import register_model
from imagefleet.store.tables_training import training_checkpoints
from imagefleet.training_protocol import CheckpointReceipt
from imagefleet.worker_protocol import CompletedOutput, CompleteRequest
from tests.conftest import Clock, Keys
from tests.harness.at_once import at_once
from tests.training_jobs import checkpoint, claim_training, submit_training

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
JOBS = 12


@pytest.fixture
def jobs(lifecycle: JobLifecycle, keys: Keys, db: Database) -> list[tuple[str, str]]:
    with db.write() as conn:
        register_model(
            conn, name="demo", kind="checkpoint", source="/m", sha256="d" * 64, size_bytes=1, now=1
        )
    claimed = []
    for index in range(JOBS):
        job_id = submit_training(lifecycle, keys.alice, output_name=f"race-{index}")
        claimed.append(
            (job_id, claim_training(lifecycle, keys.worker, node=f"n{index}").attempt_id)
        )
    return claimed


def checkpoint_rows(db: Database) -> dict[str, list[str]]:
    with db.read() as conn:
        rows = conn.execute(select(training_checkpoints.c.job_id, training_checkpoints.c.key))
        found: dict[str, list[str]] = {}
        for job_id, key in rows:
            found.setdefault(job_id, []).append(key)
    return found


def test_checkpoints_racing_completion_leave_nothing_behind(
    lifecycle: JobLifecycle, keys: Keys, db: Database, jobs: list[tuple[str, str]]
) -> None:
    for job_id, attempt in jobs:
        lifecycle.record_upload(
            keys.worker,
            attempt,
            index=0,
            key=f"jobs/{job_id}/{attempt}/0.safetensors",
            size=4,
            sha256="0" * 64,
            content_type="application/octet-stream",
        )
        done = CompleteRequest(outputs=[CompletedOutput(index=0)])
        answers = at_once(
            lambda a=attempt: checkpoint(lifecycle, keys.worker, a, 2),
            lambda a=attempt, d=done: lifecycle.complete(keys.worker, a, d),
        )
        assert not isinstance(answers[1], Exception), answers[1]
        assert isinstance(answers[0], CheckpointReceipt | StaleAttempt), answers[0]
        assert lifecycle.get(keys.alice, job_id).status is JobStatus.succeeded
        assert lifecycle.artifacts.head(f"jobs/{job_id}/{attempt}/checkpoints/0000002.zip") is None
    assert checkpoint_rows(db) == {}


def test_a_checkpoint_racing_the_reaper_is_recorded_exactly_when_it_was_accepted(
    lifecycle: JobLifecycle,
    keys: Keys,
    db: Database,
    clock: Clock,
    jobs: list[tuple[str, str]],
) -> None:
    clock.advance(lifecycle.settings.lease_seconds + 1)
    calls: list[Callable[[], Any]] = [
        lambda a=attempt: checkpoint(lifecycle, keys.worker, a, 2) for _, attempt in jobs
    ]
    answers = at_once(*calls, lifecycle.reap_expired)
    # The reaper skips a job whose row a checkpoint's transaction holds at that moment (SKIP
    # LOCKED), as a reaper on another replica would; its next pass takes it.
    assert answers[-1] + lifecycle.reap_expired() == JOBS, answers[-1]
    accepted: dict[str, bool] = {}
    for (job_id, _), answer in zip(jobs, answers, strict=False):
        if isinstance(answer, Exception):
            assert isinstance(answer, StaleAttempt), answer
        accepted[job_id] = not isinstance(answer, Exception)
    rows = checkpoint_rows(db)
    for job_id, attempt in jobs:
        key = f"jobs/{job_id}/{attempt}/checkpoints/0000002.zip"
        assert (job_id in rows) is accepted[job_id]
        assert (lifecycle.artifacts.head(key) is not None) is accepted[job_id]
        assert lifecycle.get(keys.alice, job_id).status is JobStatus.queued
    for _ in jobs:
        offered = claim_training(lifecycle, keys.worker, node="next")
        assert [c.step for c in offered.checkpoints] == ([2] if accepted[offered.job_id] else [])
