"""Retry and backoff for provider calls are pure: delays, Retry-After, typed errors, and the
per-pool health that keeps a failing provider from crashing or hammering the loop."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from imagefleet.scaling.providers.base import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.retry import (
    ProviderHealth,
    RetryPolicy,
    backoff_delay,
    call_with_retry,
    error_for_status,
    parse_retry_after,
)

POLICY = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0, jitter=0.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, POLICY) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_jitter_spreads_delays_within_its_band() -> None:
    policy = RetryPolicy(base_delay=10.0, jitter=0.1)
    assert backoff_delay(1, policy, spread=0.0) == pytest.approx(9.0)
    assert backoff_delay(1, policy, spread=1.0) == pytest.approx(11.0)


def test_retry_after_is_a_floor_on_the_delay() -> None:
    assert backoff_delay(1, POLICY, retry_after=5.0) == 5.0
    assert backoff_delay(4, POLICY, retry_after=1.0) == 8.0


def test_retry_after_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("120", now=0) == 120.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, ProviderAuthError, False),
        (403, ProviderAuthError, False),
        (404, ProviderNotFound, False),
        (422, ProviderRejected, False),
        (429, ProviderRateLimited, True),
        (500, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
    ],
)
def test_http_statuses_map_to_typed_errors(
    status: int, kind: type[ProviderError], retryable: bool
) -> None:
    error = error_for_status("salad", "scale", status, "detail", retry_after=2.0)
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.status == status
    assert str(error).startswith("salad: scale failed: ")


def test_call_with_retry_retries_only_what_may_succeed_later() -> None:
    sleeps: list[float] = []
    answers: list[ProviderError | str] = [
        ProviderUnavailable("p", "op", "503"),
        ProviderRateLimited("p", "op", "429", retry_after=3.0),
        "done",
    ]

    def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    assert call_with_retry(flaky, POLICY, sleep=sleeps.append) == "done"
    assert sleeps[1] == 3.0

    def refused() -> str:
        raise ProviderAuthError("p", "op", "401")

    sleeps.clear()
    with pytest.raises(ProviderAuthError):
        call_with_retry(refused, POLICY, sleep=sleeps.append)
    assert sleeps == []


def test_health_backs_off_after_each_failure_and_clears_on_success() -> None:
    health = ProviderHealth()
    assert health.may_try(0)
    error = ProviderUnavailable("salad", "scale", "HTTP 503")
    health = health.failed(error, now=100, policy=POLICY)
    assert health.last_error == "salad: scale failed: HTTP 503"
    assert not health.may_try(100.5)
    assert health.may_try(101)
    health = health.failed(error, now=101, policy=POLICY)
    assert health.next_try_at == 103
    rate_limited = ProviderRateLimited("salad", "scale", "429", retry_after=600)
    assert health.failed(rate_limited, now=103, policy=POLICY).next_try_at == 703
    assert health.succeeded() == ProviderHealth()
