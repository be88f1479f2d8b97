"""Retries and backoff for provider calls, and the mapping from HTTP answers to typed errors.

Two layers, on purpose: `call_with_retry` retries one call a few times quickly (a 503 or a 429
with a short Retry-After usually clears in seconds), and `ProviderHealth` is the control loop's
memory per pool: after a call fails for good, the pool is not asked again until its backoff has
passed, and the error stays visible in the pool's status until a call succeeds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from imagefleet.scaling.providers.base import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per call; delays double from `base_delay` up to `max_delay`, with
    +/- `jitter` (a fraction) so that replicas do not retry in step. A Retry-After longer than
    `max_retry_after` is not waited out inside a call: the call fails and the loop backs off."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0
    jitter: float = 0.1


def backoff_delay(
    failures: int, policy: RetryPolicy, retry_after: float | None = None, spread: float = 0.5
) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1 for the first). `spread`
    in [0, 1] picks the point in the jitter band; the provider's Retry-After is a floor."""
    delay = min(policy.max_delay, policy.base_delay * 2 ** max(failures - 1, 0))
    delay *= 1 + policy.jitter * (2 * spread - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def call_with_retry(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Runs `operation`, retrying retryable ProviderErrors; re-raises the last one."""
    rng = rng or random.Random()
    failures = 0
    while True:
        try:
            return operation()
        except ProviderError as exc:
            failures += 1
            if not exc.retryable or failures >= policy.attempts:
                raise
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
                raise
            sleep(backoff_delay(failures, policy, exc.retry_after, rng.random()))


@dataclass(frozen=True)
class ProviderHealth:
    """A pool's provider as the loop remembers it: consecutive failures, the last error (shown
    in the pool's status), and when it may be called again."""

    failures: int = 0
    last_error: str | None = None
    next_try_at: float = 0.0

    def may_try(self, now: float) -> bool:
        return now >= self.next_try_at

    def failed(
        self, error: ProviderError, now: float, policy: RetryPolicy, spread: float = 0.5
    ) -> ProviderHealth:
        failures = self.failures + 1
        delay = backoff_delay(failures, policy, error.retry_after, spread)
        return ProviderHealth(failures, str(error), now + delay)

    def succeeded(self) -> ProviderHealth:
        return ProviderHealth()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: either delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def error_for_status(
    provider: str,
    operation: str,
    status: int,
    detail: str,
    retry_after: float | None = None,
) -> ProviderError:
    """The typed error for a failed HTTP answer, with a next step in its message."""
    detail = detail.strip()[:500] or f"HTTP {status}"
    if status in (401, 403):
        return ProviderAuthError(
            provider,
            operation,
            f"{detail} (HTTP {status}: check the credentials and their permissions)",
            status=status,
        )
    if status == 404:
        return ProviderNotFound(
            provider,
            operation,
            f"{detail} (HTTP 404: check the names in the pools file)",
            status=status,
        )
    if status == 429:
        return ProviderRateLimited(
            provider,
            operation,
            f"rate limited (HTTP 429): {detail}",
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return ProviderUnavailable(
            provider,
            operation,
            f"HTTP {status}: {detail}",
            status=status,
            retry_after=retry_after,
        )
    return ProviderRejected(provider, operation, f"HTTP {status}: {detail}", status=status)
