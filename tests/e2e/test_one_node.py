"""A one-node fleet (what `imagefleet up` runs) and a job that fails once on its only node:
it never sits queued without a word. By default it retries there after the same-node delay;
with IMAGEFLEET_EXHAUSTED_NODES_POLICY=fail it fails for good with the reason."""

from __future__ import annotations

import pytest

from imagefleet.protocol import JobStatus
from tests.e2e.conftest import FleetFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
JOB = {"prompt": "flaky", "model": "demo", "width": 64, "height": 64, "steps": 2}
ENGINE = "tests.chaos_engine:FailOnceEngine"


def test_a_job_that_failed_on_the_only_node_retries_there_after_the_delay(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=0, same_node_retry_delay_seconds="1", retry_backoff_seconds="0")
    fleet.worker_env["IMAGEFLEET_WORKER_ENGINE"] = ENGINE
    fleet.start_worker()
    job = fleet.client.submit_txt2img(JOB)
    seen = fleet.wait_until(job.id, lambda j: j.last_error is not None or j.status.is_final)
    if seen.status is JobStatus.queued:
        assert seen.last_error is not None and "injected failure" in seen.last_error.message
    done = fleet.wait_final(job.id)
    assert done.status is JobStatus.succeeded, done.error
    assert fleet.attempt_outcomes(job.id) == ["failed", "succeeded"]


def test_with_the_fail_policy_it_fails_for_good_with_the_reason(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(workers=0, exhausted_nodes_policy="fail")
    fleet.worker_env["IMAGEFLEET_WORKER_ENGINE"] = ENGINE
    fleet.start_worker()
    job = fleet.client.submit_txt2img(JOB)
    done = fleet.wait_final(job.id)
    assert done.status is JobStatus.failed
    assert done.error is not None
    assert done.error.message.startswith("failed on every available node: RuntimeError: injected")
