"""The overview's figures, computed from plain rows without a database."""

from __future__ import annotations

from imagefleet.dashboard.metrics import (
    JobTimes,
    per_hour,
    percentile,
    series,
    tier_queues,
    wait_stats,
    worker_state,
)
from imagefleet.protocol import JobStatus


def job(created: float, started: float | None, finished: float | None, **kw: object) -> JobTimes:
    values: dict[str, object] = {"status": JobStatus.succeeded, "cost_units": 1.0, "images": 1}
    values.update(kw)
    return JobTimes(created, started, finished, **values)  # type: ignore[arg-type]


def test_percentiles_are_nearest_rank_and_none_without_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def test_waits_count_started_jobs_only() -> None:
    stats = wait_stats([job(0, 2, 5), job(0, 4, 9), job(0, None, None, status=JobStatus.queued)])
    assert (stats.p50_seconds, stats.p95_seconds, stats.samples) == (2.0, 4.0, 2)


def test_series_puts_each_finished_job_in_its_slice() -> None:
    jobs = [
        job(0, 1, 10, images=2),
        job(0, 3, 15),
        job(0, 5, 35, status=JobStatus.failed, images=0),
        job(0, 6, None, status=JobStatus.running, images=0),
        job(0, 1, 120),  # after the window
    ]
    buckets = series(jobs, start=0, end=40, slices=4)
    assert [b.images for b in buckets] == [0, 3, 0, 0]
    assert [b.succeeded for b in buckets] == [0, 2, 0, 0]
    assert [b.failed for b in buckets] == [0, 0, 0, 1]
    assert buckets[1].wait_p50_seconds == 1.0 and buckets[1].wait_p95_seconds == 3.0
    assert buckets[0].wait_p50_seconds is None


def test_tier_queues_merge_statuses_busiest_tier_first() -> None:
    queues = tier_queues([("free", "queued", 3), ("paid", "running", 1), ("free", "running", 2)])
    assert [(q.tier, q.queued, q.running) for q in queues] == [("free", 3, 2), ("paid", 0, 1)]


def test_quarantine_wins_then_a_job_then_a_recent_claim() -> None:
    def state(seen: float, running: int = 0, quarantined: bool = False) -> str:
        return worker_state(
            last_seen_at=seen, live_since=100, running_jobs=running, quarantined=quarantined
        )

    assert state(150, running=1, quarantined=True) == "quarantined"
    assert state(50, running=1) == "busy"
    assert state(150) == "idle"
    assert state(50) == "offline"


def test_per_hour_scales_the_window() -> None:
    assert per_hour(30, 1800) == 60.0
    assert per_hour(5, 0) == 0.0
