"""The CI variant of `bench/training_chaos.py`: real `imagefleet serve` and `imagefleet worker`
processes, and the worker training a LoRA is SIGKILLed once the job has a checkpoint.

The kill is driven by a condition (a recorded checkpoint and a running attempt), not by a
clock, so every run interrupts the job at the same kind of moment; the assertions hold whatever
step the kill lands on: the job resumes on another worker from its newest checkpoint, loses at
most one checkpoint interval, leaves no checkpoint behind, and its LoRA equals an uninterrupted
in-process run of the same job.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.training_chaos import equal_to_uninterrupted, job_params
from imagefleet.client import ImageFleetClient
from imagefleet.protocol import AttemptOutcome, JobStatus
from tests.harness.fleet import Fleet, create_demo_model, create_key
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import child_env
from tests.training_jobs import dataset_zip

pytestmark = pytest.mark.e2e

ARGS = argparse.Namespace(steps=30, resolution=32, checkpoint_every=3, seed=20261201)
WAIT = 240.0  # bounds only: each wait ends as soon as its condition holds


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_training_job_whose_worker_is_killed_resumes_elsewhere_and_equals_an_unbroken_run(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    create_demo_model(data_dir)
    client_key = create_key(data_dir, "chaos-client", "client")
    worker_key = create_key(data_dir, "chaos-worker", "worker")
    env = child_env(
        IMAGEFLEET_DATA_DIR=str(data_dir),
        IMAGEFLEET_LEASE_SECONDS="3",
        IMAGEFLEET_REAPER_INTERVAL_SECONDS="0.5",
        IMAGEFLEET_RETRY_BACKOFF_SECONDS="0",
        IMAGEFLEET_SAME_NODE_RETRY_DELAY_SECONDS="0",
    )
    fleet = Fleet(
        logs,
        OrchestratorProcess(logs, env=env),
        worker_key,
        node_prefix="train-node",
        cache_dir=data_dir / "worker-cache",
        worker_args=["--device", "cpu"],
        own_session=True,
    )
    try:
        fleet.orchestrator.start()
        fleet.start_workers(2)
        with ImageFleetClient(fleet.url, client_key) as client:
            dataset = client.upload_input(dataset_zip(), "application/zip").id
            job_id = client.submit("train_lora", job_params(ARGS, 0, dataset)).id

            def checkpointed_and_running() -> bool:
                view = client.training(job_id)
                return bool(view.checkpoints) and view.status is JobStatus.running

            wait_for("the job's first checkpoint", checkpointed_and_running)
            running = [a for a in client.attempts(job_id) if a.outcome is AttemptOutcome.running]
            victim = next(w for w in fleet.workers if w.node_id == running[-1].node_id)
            fleet.retire(victim)  # SIGKILL: no hand-back, the lease has to expire
            wait_for("the job to end", lambda: client.get(job_id).status.is_final)

            view = client.training(job_id)
            assert view.status is JobStatus.succeeded
            assert view.interruptions_survived >= 1
            assert view.steps_lost <= ARGS.checkpoint_every * view.interruptions_survived
            nodes = {a.node_id for a in client.attempts(job_id)}
            assert victim.node_id in nodes and len(nodes) >= 2
            lora = client.download(job_id, 0)
    finally:
        fleet.stop()
    left = [p for p in (data_dir / "artifacts").rglob("*") if "checkpoints" in p.parts]
    assert [p for p in left if p.is_file()] == []
    assert equal_to_uninterrupted(ARGS, tmp_path, {0: lora}) == (1, 1)
