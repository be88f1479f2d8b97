"""decide_retry: what happens to a job after a failed attempt, without a database."""

from __future__ import annotations

from imagefleet.orchestrator.retry import (
    Failure,
    JobHistory,
    RetryPolicy,
    backoff,
    decide_retry,
)
from imagefleet.protocol import FailureCode

POLICY = RetryPolicy(max_attempts=3, backoff_seconds=2.0, backoff_max_seconds=60.0)
NOW = 1000.0


def history(failures: int = 1, failed: set[str] | None = None, **extra: object) -> JobHistory:
    return JobHistory(
        failures=failures,
        failed_nodes=frozenset(failed if failed is not None else {"a"}),
        live_nodes=frozenset({"a", "b"}),
        **extra,  # type: ignore[arg-type]
    )


def test_a_handed_back_job_is_retried_at_once_and_does_not_count() -> None:
    decision = decide_retry(
        Failure(FailureCode.worker_shutdown, "stopping"), history(failures=3), POLICY, NOW
    )
    assert decision.retry and decision.run_after is None


def test_a_final_failure_is_not_retried() -> None:
    decision = decide_retry(
        Failure(FailureCode.worker_error, "bad", retryable=False), history(), POLICY, NOW
    )
    assert not decision.retry and decision.message == "bad"


def test_invalid_input_is_never_retried_even_if_the_worker_calls_it_retryable() -> None:
    decision = decide_retry(Failure(FailureCode.invalid_input, "no"), history(), POLICY, NOW)
    assert not decision.retry


def test_backoff_doubles_per_failure_up_to_the_cap() -> None:
    assert [backoff(POLICY, n) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, 60.0]
    decision = decide_retry(Failure(FailureCode.worker_error, "x"), history(2), POLICY, NOW)
    assert decision.retry and decision.run_after == NOW + 4.0


def test_a_lost_node_is_retried_elsewhere_without_backoff() -> None:
    decision = decide_retry(Failure(FailureCode.lease_expired, "gone"), history(), POLICY, NOW)
    assert decision.retry and decision.run_after is None and not decision.allow_same_node


def test_the_last_allowed_failure_fails_the_job_with_the_count_and_last_error() -> None:
    decision = decide_retry(Failure(FailureCode.worker_error, "boom"), history(3), POLICY, NOW)
    assert not decision.retry
    assert decision.message == "gave up after 3 failed attempts; last: boom"


def test_out_of_memory_asks_for_a_bigger_gpu() -> None:
    decision = decide_retry(
        Failure(FailureCode.out_of_memory, "oom"), history(worker_vram_mb=12_000), POLICY, NOW
    )
    assert decision.min_vram_mb == 12_000


def test_failed_on_every_live_node_retries_there_after_the_same_node_delay() -> None:
    decision = decide_retry(
        Failure(FailureCode.worker_error, "x"), history(failed={"a", "b"}), POLICY, NOW
    )
    assert decision.retry and decision.allow_same_node
    assert decision.run_after == NOW + 2.0  # any new node: the usual backoff
    assert decision.same_node_after == NOW + POLICY.same_node_delay_seconds


def test_failed_on_every_live_node_fails_with_the_reason_under_the_fail_policy() -> None:
    policy = RetryPolicy(3, 2.0, 60.0, exhausted_nodes="fail")
    decision = decide_retry(
        Failure(FailureCode.worker_error, "x"), history(failed={"a", "b"}), policy, NOW
    )
    assert not decision.retry
    assert decision.message == "failed on every available node: x"


def test_a_client_opt_in_overrides_the_fail_policy() -> None:
    policy = RetryPolicy(3, 2.0, 60.0, exhausted_nodes="fail")
    decision = decide_retry(
        Failure(FailureCode.worker_error, "x"),
        history(failed={"a", "b"}, allow_same_node=True),
        policy,
        NOW,
    )
    assert decision.retry and decision.allow_same_node
