"""What the fleet does when things go wrong: cancellations, killed and stopped workers, and
requests made with the wrong key. Every test that harms a worker gets a fleet of its own."""

from __future__ import annotations

import math
import signal
import subprocess
import time
from typing import Any

import httpx
import pytest

from imagefleet.api_views import JobView
from imagefleet.client import ApiError
from imagefleet.protocol import JobStatus
from imagefleet.worker.png import read_parameters
from tests.e2e.conftest import Fleet, FleetFactory

# The limit counts a test's fixtures too: the first e2e test of a pytest process also pays
# for the session's demo model, keys and shared fleet (40 s alone, 87 s seen in the full suite
# on 2 cores, where 90 s was not enough); the tests themselves take seconds.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUICK_JOB: dict[str, Any] = {
    "prompt": "a photo of a dog",
    "model": "demo",
    "width": 64,
    "height": 64,
    "steps": 3,
    "seed": 7,
}
LONG_JOB: dict[str, Any] = {
    **QUICK_JOB,
    "width": 384,
    "height": 384,
    "scheduler": "euler",
    "seed": 8,
}
# How long a long job should denoise: enough to act on it while it runs (its progress reaches
# the API at most every 0.5 s), short enough that a second attempt still fits in a test.
DENOISE_SECONDS = 3.0
CALIBRATION_STEPS = 6


def long_job(fleet: Fleet) -> dict[str, Any]:
    """LONG_JOB with as many steps as take about DENOISE_SECONDS on this machine (8 to 150),
    timed on a short job of the same size first: a fixed 60 steps of 64x64 took 2-3 s on one
    machine and 0.27 s on a faster one, which finished the job before the test saw it run (a
    step of the tiny demo model costs about the same from 64x64 to 192x192: 384x384 is where
    150 steps last 2 s on that machine)."""
    calibration = fleet.client.submit_txt2img({**LONG_JOB, "steps": CALIBRATION_STEPS})
    done = fleet.wait_final(calibration.id, timeout=120)
    assert done.status is JobStatus.succeeded, done
    per_step = max(done.timings.inference_seconds or 0.0, 1e-3) / CALIBRATION_STEPS
    return {**LONG_JOB, "steps": min(150, max(8, math.ceil(DENOISE_SECONDS / per_step)))}


def is_denoising(job: JobView) -> bool:
    """Running and past its first step, so the worker is inside the pipeline."""
    return job.status is JobStatus.running and job.progress.step > 0


def test_a_queued_job_cancelled_is_cancelled_at_once_and_never_runs(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=0)
    job = fleet.client.submit_txt2img(QUICK_JOB)

    cancelled = fleet.client.cancel(job.id)
    assert cancelled.status is JobStatus.cancelled
    assert fleet.client.get(job.id).status is JobStatus.cancelled

    worker = fleet.start_worker()
    later = fleet.client.submit_txt2img(QUICK_JOB)
    assert fleet.wait_final(later.id).status is JobStatus.succeeded

    after = fleet.client.get(job.id)
    assert after.status is JobStatus.cancelled
    assert after.attempts == 0
    assert after.outputs == []
    assert job.id not in worker.log()


def test_a_running_job_cancelled_stays_cancelled_and_the_worker_takes_the_next_job(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=1)
    job = fleet.client.submit_txt2img(long_job(fleet))
    fleet.wait_until(job.id, is_denoising)

    assert fleet.client.cancel(job.id).status is JobStatus.cancelled
    later = fleet.client.submit_txt2img(QUICK_JOB)
    statuses: set[JobStatus] = set()

    def finished_watching_the_cancelled_one(view: JobView) -> bool:
        statuses.add(fleet.client.get(job.id).status)
        return view.status.is_final

    done = fleet.wait_until(later.id, finished_watching_the_cancelled_one)

    assert done.status is JobStatus.succeeded
    assert statuses <= {JobStatus.cancelled}
    after = fleet.client.get(job.id)
    assert after.status is JobStatus.cancelled
    assert after.outputs == []
    assert after.attempts == 1
    assert fleet.artifact_files(job.id) == []
    assert fleet.attempt_outcomes(job.id) == ["cancelled"]
    # It stopped mid-way, or (when the last step was already running as the cancel arrived)
    # its result was refused: either way nothing of the cancelled job was kept.
    log = fleet.workers[0].log()
    assert "the client cancelled the job" in log or "result dropped" in log


def test_a_job_of_a_worker_killed_mid_job_is_finished_by_another_after_the_lease_expires(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=1, lease_seconds=3.0)
    job = fleet.client.submit_txt2img(long_job(fleet))
    fleet.wait_until(job.id, is_denoising)

    victim = fleet.workers[0]
    victim.send(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert fleet.client.get(job.id).status is JobStatus.running  # nobody told the orchestrator
    rescuer = fleet.start_worker()

    done = fleet.wait_final(job.id, timeout=50)
    assert done.status is JobStatus.succeeded, done
    assert done.attempts == 2
    assert fleet.attempt_outcomes(job.id) == ["lease_expired", "succeeded"]
    assert job.id in rescuer.log()
    (output,) = done.outputs
    data = fleet.client.download(job.id, output.index)
    assert read_parameters(data)["seed"] == LONG_JOB["seed"]
    assert len(fleet.artifact_files(job.id)) >= 1


def test_a_worker_sent_sigterm_hands_its_job_back_at_once_and_exits_cleanly(
    start_fleet: FleetFactory,
) -> None:
    # A long lease proves the requeue is the hand-back, not the lease running out; and with a
    # single allowed attempt, a hand-back counted as a failure would fail the job for good.
    fleet = start_fleet(workers=1, lease_seconds=30.0, max_attempts="1")
    job = fleet.client.submit_txt2img(long_job(fleet))
    fleet.wait_until(job.id, is_denoising)

    worker = fleet.workers[0]
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    requeued = fleet.wait_until(job.id, lambda j: j.status is JobStatus.queued, timeout=20)
    handed_back_after = time.monotonic() - signalled

    assert handed_back_after < fleet.lease_seconds / 3, handed_back_after
    assert requeued.error is None
    assert fleet.attempt_outcomes(job.id) == ["handed_back"]
    assert fleet.counted_failures(job.id) == 0
    try:
        assert worker.wait(timeout=15) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the worker did not exit within 15 s of SIGTERM")


def test_keys_only_open_their_own_side_of_the_api_and_their_own_jobs(
    shared_fleet: Fleet,
) -> None:
    fleet = shared_fleet
    finished = fleet.client.submit_txt2img(QUICK_JOB)
    assert fleet.wait_final(finished.id).status is JobStatus.succeeded

    claim = {"worker_id": "intruder", "node_id": "intruder", "wait_seconds": 0}
    with httpx.Client(base_url=fleet.url, timeout=10) as http:
        as_client = http.post("/v1/worker/claim", json=claim, headers=bearer(fleet.keys.alice))
        assert as_client.status_code == 403, as_client.text
        as_worker = http.post(
            "/v1/jobs",
            json={"kind": "txt2img", "params": QUICK_JOB},
            headers=bearer(fleet.keys.worker),
        )
        assert as_worker.status_code == 403, as_worker.text

    bob = fleet.client_for(fleet.keys.bob)
    unfinished = fleet.client.submit_txt2img({**QUICK_JOB, "steps": 20})
    for refused_call in (
        lambda: bob.get(finished.id),
        lambda: bob.download(finished.id, 0),
        lambda: bob.cancel(unfinished.id),
    ):
        with pytest.raises(ApiError) as refused:
            refused_call()
        assert refused.value.status == 404
    assert not {finished.id, unfinished.id} & {j.id for j in bob.list_jobs().jobs}

    assert fleet.wait_final(unfinished.id).status is JobStatus.succeeded
    assert read_parameters(fleet.client.download(finished.id, 0))["seed"] == QUICK_JOB["seed"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_worker_with_a_shutdown_grace_finishes_its_job_before_exiting(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=0, lease_seconds=30.0)
    fleet.worker_env["IMAGEFLEET_WORKER_SHUTDOWN_GRACE"] = "120"
    worker = fleet.start_worker()
    job = fleet.client.submit_txt2img(long_job(fleet))
    fleet.wait_until(job.id, is_denoising)
    worker.send(signal.SIGTERM)
    done = fleet.wait_final(job.id, timeout=120)
    assert done.status is JobStatus.succeeded
    assert fleet.attempt_outcomes(job.id) == ["succeeded"]
    assert worker.wait(timeout=30) == 0
