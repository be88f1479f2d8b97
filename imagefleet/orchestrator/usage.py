"""Cost accounting as the API shows it: each job's cost in its record, a client's usage by day
and kind (`GET /v1/usage`), and the fleet's per pool and GPU type (`GET /v1/admin/usage`).

An attempt costs its lease time (claim to end, whatever its outcome) at its pool's hourly price
(`scaling/pricing.py`); a job costs the sum of its attempts. Everything is computed from the
attempts and workers tables when asked, so a price edited through the admin API reprices the
past too: the figures are "at today's prices", which is what an operator comparing pools wants.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime

from imagefleet.api_views import JobCostView
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.scaling.pricing import (
    PriceTable,
    attempt_cost,
    billable_seconds,
    fleet_usage,
    job_costs,
)
from imagefleet.scaling.wire import FleetUsageRow, FleetUsageView, KeyUsageRow, KeyUsageView
from imagefleet.store import usage as usage_sql
from imagefleet.store.database import Database


def job_cost_views(
    db: Database, job_ids: list[str], prices: PriceTable, now: float
) -> dict[str, JobCostView]:
    """The cost of each of these jobs that has had an attempt."""
    with db.read() as conn:
        rows = usage_sql.attempts_of_jobs(conn, job_ids)
    records = [row.record for row in rows]
    priced = {r.job_id for r in records if prices.hourly(r.pool, r.gpu) is not None}
    return {
        job_id: JobCostView(
            billable_seconds=round(cost.billable_seconds, 3),
            cost_usd=cost.cost if job_id in priced else None,
            cost_per_image_usd=cost.cost_per_image if job_id in priced else None,
            unpriced_seconds=round(cost.unpriced_seconds, 3),
        )
        for job_id, cost in job_costs(records, prices, now).items()
    }


def key_usage(
    db: Database, key_id: str, prices: PriceTable, start: float, end: float
) -> KeyUsageView:
    """The key's jobs that finished in [start, end), by UTC day and kind."""
    with db.read() as conn:
        rows = usage_sql.attempts_of_owner(conn, key_id, start, end)
    groups: dict[tuple[date, str], dict[str, float]] = defaultdict(
        lambda: {"images": 0.0, "seconds": 0.0, "cost": 0.0}
    )
    jobs: dict[tuple[date, str], set[str]] = defaultdict(set)
    for row in rows:
        assert row.job_finished_at is not None
        group = (datetime.fromtimestamp(row.job_finished_at, UTC).date(), row.kind)
        jobs[group].add(row.record.job_id)
        totals = groups[group]
        totals["images"] += row.record.images
        totals["seconds"] += billable_seconds(row.record, end)
        totals["cost"] += attempt_cost(row.record, prices, end) or 0.0
    usage_rows = [
        KeyUsageRow(
            day=day,
            kind=kind,
            jobs=len(jobs[(day, kind)]),
            images=int(totals["images"]),
            gpu_seconds=round(totals["seconds"], 3),
            cost_usd=totals["cost"],
        )
        for (day, kind), totals in sorted(groups.items())
    ]
    return KeyUsageView(
        key_id=key_id,
        start=to_datetime(start),
        end=to_datetime(end),
        rows=usage_rows,
        jobs=sum(r.jobs for r in usage_rows),
        images=sum(r.images for r in usage_rows),
        gpu_seconds=round(sum(r.gpu_seconds for r in usage_rows), 3),
        cost_usd=sum(r.cost_usd for r in usage_rows),
    )


def admin_usage(db: Database, prices: PriceTable, start: float, end: float) -> FleetUsageView:
    """Per pool and GPU type over [start, end): what was delivered and what it cost."""
    with db.read() as conn:
        rows = usage_sql.attempts_in_window(conn, start, end)
        spans = usage_sql.worker_spans(conn, start, end)
    usage = fleet_usage([row.record for row in rows], prices, start, end, spans)
    return FleetUsageView(
        start=to_datetime(start),
        end=to_datetime(end),
        pools=[
            FleetUsageRow(
                pool=u.pool,
                gpu=u.gpu,
                images=u.images,
                images_per_hour=u.images_per_hour,
                seconds_per_image=u.seconds_per_image,
                images_per_dollar=u.images_per_dollar,
                idle_share=u.idle_share,
                busy_seconds=round(u.busy_seconds, 3),
                paid_seconds=round(u.paid_seconds, 3),
                cost_usd=u.cost,
            )
            for u in usage
        ],
    )
