"""The overview's figures from plain rows, pure: percentiles, per-slice series, worker states.

The store reads the rows (`store/overview.py`); this module only counts, so the same figures
can be checked in a unit test without a database and recomputed from any rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from imagefleet.dashboard.protocol import Bucket, TierQueue, WaitStats, WorkerState
from imagefleet.protocol import JobStatus
from imagefleet.scaling.pricing import AttemptRecord, PriceTable, attempt_cost, billable_seconds

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class JobTimes:
    """A job finished in the window or running now: when it was submitted, first started and
    finished, how it ended, its cost estimate and its accepted outputs."""

    created_at: float
    started_at: float | None
    finished_at: float | None
    status: JobStatus
    cost_units: float | None
    images: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def wait_of(job: JobTimes) -> float | None:
    return None if job.started_at is None else max(0.0, job.started_at - job.created_at)


def wait_stats(jobs: Iterable[JobTimes]) -> WaitStats:
    waits = [w for w in (wait_of(job) for job in jobs) if w is not None]
    return WaitStats(
        p50_seconds=percentile(waits, 50), p95_seconds=percentile(waits, 95), samples=len(waits)
    )


def series(jobs: Iterable[JobTimes], start: float, end: float, slices: int) -> list[Bucket]:
    """`slices` equal slices of [start, end): images, successes, failures and waits of the
    jobs that finished in each."""
    width = (end - start) / slices
    finished: list[list[JobTimes]] = [[] for _ in range(slices)]
    for job in jobs:
        if job.finished_at is None or not start <= job.finished_at < end:
            continue
        finished[min(slices - 1, int((job.finished_at - start) / width))].append(job)
    buckets = []
    for n, group in enumerate(finished):
        stats = wait_stats(group)
        buckets.append(
            Bucket(
                start=datetime.fromtimestamp(start + n * width, UTC),
                images=sum(job.images for job in group),
                succeeded=sum(job.status is JobStatus.succeeded for job in group),
                failed=sum(job.status is JobStatus.failed for job in group),
                wait_p50_seconds=stats.p50_seconds,
                wait_p95_seconds=stats.p95_seconds,
            )
        )
    return buckets


def tier_queues(counts: Iterable[tuple[str, str, int]]) -> list[TierQueue]:
    """(tier, status, count) rows as one line per tier, busiest first."""
    queued: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for tier, status, count in counts:
        (queued if status == JobStatus.queued.value else running)[tier] += count
    tiers = sorted(set(queued) | set(running), key=lambda t: (-queued[t] - running[t], t))
    return [TierQueue(tier=t, queued=queued[t], running=running[t]) for t in tiers]


def worker_state(
    *, last_seen_at: float, live_since: float, running_jobs: int, quarantined: bool
) -> WorkerState:
    """Quarantine wins (the node gets no work whatever it does); a worker with a job is busy;
    one that claimed recently is idle; any other is offline."""
    if quarantined:
        return "quarantined"
    if running_jobs:
        return "busy"
    return "idle" if last_seen_at >= live_since else "offline"


def per_hour(count: float, window_seconds: float) -> float:
    return count * SECONDS_PER_HOUR / window_seconds if window_seconds > 0 else 0.0


@dataclass(frozen=True)
class WindowCost:
    """Money spent on the attempts of the jobs that finished in the window, at today's prices.
    `usd` is None when none of them ran on a priced pool or GPU (nothing to show in money)."""

    usd: float | None
    unpriced_seconds: float


def window_cost(records: Iterable[AttemptRecord], prices: PriceTable, now: float) -> WindowCost:
    """The same arithmetic as `/v1/usage` (lease seconds x hourly price), summed."""
    usd: float | None = None
    unpriced = 0.0
    for record in records:
        cost = attempt_cost(record, prices, now)
        if cost is None:
            unpriced += billable_seconds(record, now)
        else:
            usd = (usd or 0.0) + cost
    return WindowCost(usd=usd, unpriced_seconds=unpriced)
