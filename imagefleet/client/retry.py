"""When to try a refused request again: a pure decision shared by the sync and async clients.

429 (rate or queue limit) and 503 (database or artifact store briefly unavailable) are answers
the server gives before doing anything, so the same request may be sent again; the server's
Retry-After says when, and without it the wait doubles from `base` with jitter so that many
clients refused together do not all come back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time

RETRYABLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0


def retry_delay(
    policy: RetryPolicy, status: int, retry_after: str | None, retries_done: int
) -> float | None:
    """Seconds to wait before retry number `retries_done + 1`, or None to give up."""
    if status not in RETRYABLE_STATUSES or retries_done >= policy.max_retries:
        return None
    told = _parse_retry_after(retry_after)
    if told is not None:
        return min(max(0.0, told), policy.max_seconds)
    backoff = policy.base_seconds * 2**retries_done
    return min(backoff * random.uniform(0.8, 1.2), policy.max_seconds)


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (`"5"`) or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - time()
    except (TypeError, ValueError):
        return None
