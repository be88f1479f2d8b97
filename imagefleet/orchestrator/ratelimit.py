"""Per-key request rate limiting with token buckets.

The buckets live in each replica's memory: no database write per request, at the price that
N replicas admit up to N times the configured rate (set the rate per replica accordingly).
The bucket arithmetic is pure: it takes the time as an argument.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Takes one token; returns 0.0 if granted, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key_id: str, now: float) -> float:
        """0.0 when the request may go ahead, else the Retry-After in seconds."""
        if not self.enabled:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = TokenBucket(self.rate, self.burst, self.burst, now)
            return bucket.take(now)
