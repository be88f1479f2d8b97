"""Job state transitions on a real SQLite store, with a hand-driven clock for leases."""

from __future__ import annotations

import pytest

from imagefleet.config import Settings
from imagefleet.errors import (
    Conflict,
    InvalidField,
    NotFound,
    QuotaExceeded,
    StaleAttempt,
)
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.protocol import JobStatus
from imagefleet.store.models import Model
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    WorkerCapabilities,
)
from tests.conftest import Clock, Keys


def submit(lifecycle: JobLifecycle, keys: Keys, **params: object) -> str:
    fields: dict[str, object] = {"prompt": "a cat", "model": "demo", "width": 64, "height": 64}
    job = Txt2ImgJob(params=Txt2ImgParams.model_validate({**fields, **params}))
    return lifecycle.submit(keys.alice, job)[0].id


def claim(
    lifecycle: JobLifecycle, keys: Keys, node: str = "node-a", worker: str = "w1"
) -> Assignment | None:
    return lifecycle.claim(keys.worker, ClaimRequest(worker_id=worker, node_id=node))


def upload_and_complete(lifecycle: JobLifecycle, keys: Keys, assignment: Assignment) -> JobStatus:
    lifecycle.record_upload(
        keys.worker,
        assignment.attempt_id,
        index=0,
        key=f"jobs/{assignment.job_id}/{assignment.attempt_id}/0.png",
        size=10,
        sha256="0" * 64,
        content_type="image/png",
    )
    outcome = lifecycle.complete(
        keys.worker,
        assignment.attempt_id,
        CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=64, height=64)]),
    )
    return outcome.job_status


@pytest.fixture(autouse=True)
def _model(model: Model) -> None:
    """Every test here needs the `demo` model registered."""


def test_submit_queues_the_job_and_fixes_a_random_seed(lifecycle: JobLifecycle, keys: Keys) -> None:
    row = lifecycle.get(keys.alice, submit(lifecycle, keys))
    assert row.status is JobStatus.queued
    assert 0 <= row.params["seed"] < 2**32


def test_submit_refuses_an_unknown_model_at_once(lifecycle: JobLifecycle, keys: Keys) -> None:
    job = Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="nope", width=64, height=64))
    with pytest.raises(NotFound, match="no model named 'nope'"):
        lifecycle.submit(keys.alice, job)


def test_submit_enforces_configured_size_limits_naming_the_field(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    with pytest.raises(InvalidField) as info:
        submit(lifecycle, keys, width=2048)
    assert info.value.loc[-1] == "width" and "between 64 and 1024" in info.value.message
    with pytest.raises(InvalidField, match="at most 262144 pixels"):
        submit(lifecycle, keys, width=1024, height=512)


def test_claim_hands_a_job_to_exactly_one_worker(lifecycle: JobLifecycle, keys: Keys) -> None:
    job_id = submit(lifecycle, keys)
    first = claim(lifecycle, keys)
    assert first is not None and first.job_id == job_id and first.fencing_token == 1
    assert claim(lifecycle, keys, worker="w2") is None
    assert lifecycle.get(keys.alice, job_id).status is JobStatus.running


def test_heartbeat_records_progress_and_extends_the_lease(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job_id = submit(lifecycle, keys)
    assignment = claim(lifecycle, keys)
    assert assignment
    for _ in range(5):  # 5 x 8 s: far past one 10 s lease, but renewed each time
        clock.advance(8)
        answer = lifecycle.heartbeat(
            keys.worker, assignment.attempt_id, HeartbeatRequest(step=3, total_steps=30)
        )
        assert answer.action == "continue"
        assert lifecycle.reap_expired() == 0
    row = lifecycle.get(keys.alice, job_id)
    assert (row.progress_step, row.progress_total, row.status) == (3, 30, JobStatus.running)


def test_an_expired_lease_requeues_the_job_and_fences_off_the_old_attempt(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job_id = submit(lifecycle, keys)
    old = claim(lifecycle, keys, node="node-a")
    assert old
    clock.advance(11)
    assert lifecycle.reap_expired() == 1
    assert lifecycle.get(keys.alice, job_id).status is JobStatus.queued
    new = claim(lifecycle, keys, node="node-b", worker="w2")
    assert new and new.job_id == job_id and new.fencing_token == 2
    with pytest.raises(StaleAttempt):
        lifecycle.heartbeat(keys.worker, old.attempt_id, HeartbeatRequest(step=1, total_steps=2))
    with pytest.raises(StaleAttempt):
        upload_and_complete(lifecycle, keys, old)
    assert upload_and_complete(lifecycle, keys, new) is JobStatus.succeeded


def test_completion_is_idempotent_for_the_winner(lifecycle: JobLifecycle, keys: Keys) -> None:
    submit(lifecycle, keys)
    assignment = claim(lifecycle, keys)
    assert assignment
    assert upload_and_complete(lifecycle, keys, assignment) is JobStatus.succeeded
    repeat = lifecycle.complete(
        keys.worker,
        assignment.attempt_id,
        CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=64, height=64)]),
    )
    assert repeat.job_status is JobStatus.succeeded


def test_completion_needs_every_output_uploaded(lifecycle: JobLifecycle, keys: Keys) -> None:
    submit(lifecycle, keys, num_images=2)
    assignment = claim(lifecycle, keys)
    assert assignment
    with pytest.raises(InvalidField, match=r"expected outputs 0\.\.1"):
        upload_and_complete(lifecycle, keys, assignment)


def test_a_job_is_not_handed_back_to_the_node_where_it_failed(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    first = claim(lifecycle, keys, node="node-a")
    assert first
    outcome = lifecycle.fail(
        keys.worker, first.attempt_id, FailRequest(code="worker_error", message="boom")
    )
    assert outcome.job_status is JobStatus.queued
    assert claim(lifecycle, keys, node="node-a", worker="w1-again") is None
    second = claim(lifecycle, keys, node="node-b", worker="w2")
    assert second and second.job_id == job_id


def test_retryable_failures_give_up_after_max_attempts(lifecycle: JobLifecycle, keys: Keys) -> None:
    job_id = submit(lifecycle, keys)
    statuses = []
    for node in ("n1", "n2", "n3"):
        assignment = claim(lifecycle, keys, node=node, worker=node)
        assert assignment
        statuses.append(
            lifecycle.fail(
                keys.worker, assignment.attempt_id, FailRequest(code="worker_error")
            ).job_status
        )
    assert statuses == [JobStatus.queued, JobStatus.queued, JobStatus.failed]
    row = lifecycle.get(keys.alice, job_id)
    assert row.error_code == "worker_error" and "gave up after 3 failed attempts" in (
        row.error_message or ""
    )


def test_a_final_failure_fails_the_job_at_once(lifecycle: JobLifecycle, keys: Keys) -> None:
    submit(lifecycle, keys)
    assignment = claim(lifecycle, keys)
    assert assignment
    outcome = lifecycle.fail(
        keys.worker,
        assignment.attempt_id,
        FailRequest(code="invalid_input", message="bad", retryable=False),
    )
    assert outcome.job_status is JobStatus.failed


def test_a_worker_shutting_down_hands_the_job_back_without_it_counting(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    for _ in range(5):  # more than max_attempts hand-backs, still queued
        assignment = claim(lifecycle, keys)
        assert assignment
        lifecycle.fail(
            keys.worker, assignment.attempt_id, FailRequest(code="worker_shutdown", retryable=False)
        )
    assert lifecycle.get(keys.alice, job_id).status is JobStatus.queued
    assert claim(lifecycle, keys) is not None  # and the same node may take it again


def test_cancelling_a_queued_job_means_it_is_never_claimed(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    assert lifecycle.cancel(keys.alice, job_id).status is JobStatus.cancelled
    assert claim(lifecycle, keys) is None


def test_a_cancelled_running_job_tells_its_worker_and_never_turns_succeeded(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    assignment = claim(lifecycle, keys)
    assert assignment
    lifecycle.cancel(keys.alice, job_id)
    answer = lifecycle.heartbeat(
        keys.worker, assignment.attempt_id, HeartbeatRequest(step=1, total_steps=2)
    )
    assert answer.action == "cancel"
    with pytest.raises(StaleAttempt):
        upload_and_complete(lifecycle, keys, assignment)
    assert lifecycle.get(keys.alice, job_id).status is JobStatus.cancelled


def test_cancelling_a_finished_job_changes_nothing(lifecycle: JobLifecycle, keys: Keys) -> None:
    job_id = submit(lifecycle, keys)
    assignment = claim(lifecycle, keys)
    assert assignment
    upload_and_complete(lifecycle, keys, assignment)
    assert lifecycle.cancel(keys.alice, job_id).status is JobStatus.succeeded


def test_clients_cannot_see_each_others_jobs(lifecycle: JobLifecycle, keys: Keys) -> None:
    job_id = submit(lifecycle, keys)
    with pytest.raises(NotFound):
        lifecycle.get(keys.bob, job_id)
    with pytest.raises(NotFound):
        lifecycle.cancel(keys.bob, job_id)
    assert lifecycle.list_jobs(keys.bob, status=None, cursor=None, limit=10) == ([], None)


def test_paid_tier_jobs_are_claimed_before_older_free_ones(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    submit(lifecycle, keys)
    paid = lifecycle.submit(
        keys.bob, Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="demo", width=64, height=64))
    )[0]
    assignment = claim(lifecycle, keys)
    assert assignment and assignment.job_id == paid.id


def test_a_repeated_idempotent_submit_returns_the_first_job(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job = Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="demo", width=64, height=64))
    first, replayed_first = lifecycle.submit(keys.alice, job, "order-1")
    again, replayed_again = lifecycle.submit(keys.alice, job, "order-1")
    assert (again.id, replayed_first, replayed_again) == (first.id, False, True)
    other, _ = lifecycle.submit(keys.bob, job, "order-1")  # keys are per client
    assert other.id != first.id


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    lifecycle.submit(keys.alice, Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="demo")), "k")
    with pytest.raises(Conflict, match="different request body"):
        lifecycle.submit(
            keys.alice, Txt2ImgJob(params=Txt2ImgParams(prompt="y", model="demo")), "k"
        )


def test_an_idempotency_key_expires_after_its_window(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job = Txt2ImgJob(params=Txt2ImgParams(prompt="x", model="demo", width=64, height=64))
    first, _ = lifecycle.submit(keys.alice, job, "k")
    clock.advance(24 * 3600 + 1)
    later, replayed = lifecycle.submit(keys.alice, job, "k")
    assert later.id != first.id and not replayed


def test_a_client_cannot_queue_more_than_its_limit(
    lifecycle: JobLifecycle, keys: Keys, settings: Settings
) -> None:
    settings.max_queued_per_key = 2
    submit(lifecycle, keys)
    submit(lifecycle, keys)
    with pytest.raises(QuotaExceeded, match="already has 2 queued jobs"):
        submit(lifecycle, keys)
    assert claim(lifecycle, keys)  # one starts running: room for one more
    submit(lifecycle, keys)


def fail_on(lifecycle: JobLifecycle, keys: Keys, node: str, code: str = "worker_error") -> None:
    submit(lifecycle, keys)
    assignment = claim(lifecycle, keys, node=node, worker=node)
    assert assignment
    lifecycle.fail(keys.worker, assignment.attempt_id, FailRequest(code=code, message="boom"))


def test_a_node_failing_too_often_is_quarantined_and_refused_work(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    for _ in range(4):
        fail_on(lifecycle, keys, "bad-node")
        clock.advance(60)
    submit(lifecycle, keys)
    assert claim(lifecycle, keys, node="bad-node", worker="bad-node") is not None  # 4 < 5
    fail_on(lifecycle, keys, "bad-node")  # the fifth failure within 10 minutes
    with pytest.raises(NodeQuarantined, match="5 failed attempts"):
        claim(lifecycle, keys, node="bad-node", worker="bad-node")
    assert claim(lifecycle, keys, node="good-node", worker="good-node") is not None
    events = lifecycle.health.events(0, 10)
    assert [(e.node_id, e.kind) for e in events] == [("bad-node", "quarantined")]
    assert lifecycle.health.release("bad-node", clock.now)
    submit(lifecycle, keys)
    assert claim(lifecycle, keys, node="bad-node", worker="bad-node") is not None
    assert [e.kind for e in lifecycle.health.events(events[0].id, 10)] == ["released"]
    fail_on(lifecycle, keys, "bad-node")  # a release starts the count afresh
    assert [e.kind for e in lifecycle.health.events(0, 10)] == ["quarantined", "released"]


def test_failures_spread_over_a_long_time_or_caused_by_the_job_do_not_quarantine(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    for _ in range(6):
        fail_on(lifecycle, keys, "slow-node")
        clock.advance(200)  # 5 failures never fit in 600 s
    for _ in range(6):
        fail_on(lifecycle, keys, "node-b", code="invalid_input")
    assert lifecycle.health.events(0, 10) == []


def test_a_failed_job_backs_off_before_its_retry_doubling_each_time(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock, settings: Settings
) -> None:
    settings.retry_backoff_seconds = 4
    settings.max_attempts = 5
    submit(lifecycle, keys)
    assignment = claim(lifecycle, keys, node="n1", worker="n1")
    for waited, node in ((4, "n2"), (8, "n3")):
        assert assignment
        lifecycle.fail(keys.worker, assignment.attempt_id, FailRequest(code="worker_error"))
        clock.advance(waited - 0.5)
        assert claim(lifecycle, keys, node=node, worker=node) is None
        clock.advance(0.5)
        assignment = claim(lifecycle, keys, node=node, worker=node)
        assert assignment is not None


def test_a_lost_node_s_job_is_retried_at_once(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock, settings: Settings
) -> None:
    settings.retry_backoff_seconds = 30
    submit(lifecycle, keys)
    assert claim(lifecycle, keys, node="spot-1")
    clock.advance(11)
    lifecycle.reap_expired()
    assert claim(lifecycle, keys, node="spot-2", worker="w2") is not None


def test_after_running_out_of_memory_a_bigger_gpu_is_preferred(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    def claim_with(node: str, vram: int) -> Assignment | None:
        request = ClaimRequest(
            worker_id=node, node_id=node, capabilities=WorkerCapabilities(vram_mb=vram)
        )
        return lifecycle.claim(keys.worker, request)

    oom_job = submit(lifecycle, keys)
    first = claim_with("gpu-12g", 12_000)
    assert first and first.job_id == oom_job
    lifecycle.fail(keys.worker, first.attempt_id, FailRequest(code="out_of_memory"))
    small_job = submit(lifecycle, keys)
    # Another 12 GB card takes the younger job, leaving the OOM job for a bigger card...
    taken = claim_with("gpu-12g-b", 12_000)
    assert taken and taken.job_id == small_job
    bigger = claim_with("gpu-24g", 24_000)
    assert bigger and bigger.job_id == oom_job
    # ...but with nothing else queued a same-size card may still try it.
    lifecycle.fail(keys.worker, bigger.attempt_id, FailRequest(code="worker_error"))
    assert claim_with("gpu-12g-c", 12_000) is not None


def test_a_same_node_retry_happens_after_the_delay_when_no_other_node_is_alive(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job = Txt2ImgJob(
        params=Txt2ImgParams(prompt="x", model="demo", width=64, height=64),
        allow_same_node_retry=True,
    )
    lifecycle.submit(keys.alice, job)
    first = claim(lifecycle, keys, node="only-node", worker="w1")
    assert first
    lifecycle.fail(keys.worker, first.attempt_id, FailRequest(code="worker_error"))
    assert claim(lifecycle, keys, node="only-node", worker="w1") is None
    clock.advance(lifecycle.settings.same_node_retry_delay_seconds)
    assert claim(lifecycle, keys, node="only-node", worker="w1") is not None


def test_a_job_that_failed_on_the_only_node_shows_its_error_while_it_waits_to_retry(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    first = claim(lifecycle, keys, node="only-node")
    assert first
    lifecycle.fail(
        keys.worker, first.attempt_id, FailRequest(code="worker_error", message="CUDA broke")
    )
    row = lifecycle.get(keys.alice, job_id)
    assert row.status is JobStatus.queued
    assert (row.error_code, row.error_message) == ("worker_error", "CUDA broke")


def test_a_new_node_may_take_a_job_at_once_that_the_only_other_node_failed(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    job_id = submit(lifecycle, keys)
    first = claim(lifecycle, keys, node="only-node")
    assert first
    lifecycle.fail(keys.worker, first.attempt_id, FailRequest(code="worker_error"))
    second = claim(lifecycle, keys, node="new-node", worker="w2")
    assert second and second.job_id == job_id


def test_with_the_fail_policy_a_job_that_failed_on_every_live_node_fails_with_the_reason(
    lifecycle: JobLifecycle, keys: Keys
) -> None:
    lifecycle.settings.exhausted_nodes_policy = "fail"
    job_id = submit(lifecycle, keys)
    first = claim(lifecycle, keys, node="only-node")
    assert first
    outcome = lifecycle.fail(
        keys.worker, first.attempt_id, FailRequest(code="worker_error", message="CUDA broke")
    )
    assert outcome.job_status is JobStatus.failed
    row = lifecycle.get(keys.alice, job_id)
    assert row.error_message == "failed on every available node: CUDA broke"


def test_an_orchestrator_restart_gives_running_leases_a_fresh_lease(
    lifecycle: JobLifecycle, keys: Keys, clock: Clock
) -> None:
    job_id = submit(lifecycle, keys)
    assert claim(lifecycle, keys)
    clock.advance(9)  # 1 s of the 10 s lease left when the orchestrator comes back
    assert lifecycle.grace_leases() == 1
    clock.advance(5)
    assert lifecycle.reap_expired() == 0
    assert lifecycle.get(keys.alice, job_id).status is JobStatus.running
    clock.advance(6)
    assert lifecycle.reap_expired() == 1
