"""`GET /v1/overview`: the dashboard's usage figures, read-only, in one read transaction.

An admin key sees the fleet (every tenant's jobs, the workers, the newest jobs of all tenants);
a client key sees the same figures over its own jobs only, and nothing of workers or others.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Query
from sqlalchemy import Connection

from imagefleet.config import Settings
from imagefleet.dashboard import metrics
from imagefleet.dashboard.protocol import OverviewView, RecentJob, WorkerSummary
from imagefleet.orchestrator.deps import ClientKey, Lifecycle, Pools
from imagefleet.orchestrator.node_health import JOB_FAULT_CODES
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.protocol import JobStatus
from imagefleet.store import nodes as node_sql
from imagefleet.store import overview as overview_sql
from imagefleet.store import usage as usage_sql

router = APIRouter(prefix="/v1", tags=["dashboard"], route_class=DocumentedRoute)
SLICES = 12
RECENT_JOBS = 20
# Workers not seen for this many leases are left out of the page (they are gone).
WORKERS_SHOWN_LEASES = 20


@router.get(
    "/overview",
    response_model=OverviewView,
    summary="Usage in the last minutes: queue, throughput, waits, cost; workers (admin)",
)
def get_overview(
    key: ClientKey,
    lifecycle: Lifecycle,
    pools: Pools,
    window_minutes: int = Query(60, ge=5, le=7 * 24 * 60),
) -> OverviewView:
    now = lifecycle.clock()
    window = window_minutes * 60.0
    owner = None if key.scope == "admin" else key.id
    prices = pools.prices()
    with lifecycle.db.read() as conn:
        counts = overview_sql.queue_counts(conn, owner)
        jobs = overview_sql.window_jobs(conn, owner, now - window)
        fleet = _fleet(conn, lifecycle.settings, now) if owner is None else {}
        billed = usage_sql.attempts_of_finished(conn, now - window, now, owner)
    finished = [j for j in jobs if j.finished_at is not None and j.finished_at >= now - window]
    succeeded = [j for j in finished if j.status is JobStatus.succeeded]
    images = sum(j.images for j in succeeded)
    units = sum(j.cost_units or 0.0 for j in succeeded)
    queue = metrics.tier_queues(counts)
    money = metrics.window_cost([a.record for a in billed], prices, now)
    return OverviewView(
        scope="fleet" if owner is None else "account",
        generated_at=to_datetime(now),
        window_seconds=window,
        queue=queue,
        queued=sum(t.queued for t in queue),
        running=sum(t.running for t in queue),
        succeeded=len(succeeded),
        failed=sum(j.status is JobStatus.failed for j in finished),
        images=images,
        images_per_hour=metrics.per_hour(images, window),
        wait=metrics.wait_stats(jobs),
        cost_units_per_hour=metrics.per_hour(units, window),
        cost_units_per_image=units / images if images else None,
        prices_configured=bool(prices.by_pool or prices.by_gpu),
        cost_usd=money.usd,
        cost_usd_per_hour=None if money.usd is None else metrics.per_hour(money.usd, window),
        cost_usd_per_image=money.usd / images if money.usd is not None and images else None,
        unpriced_seconds=round(money.unpriced_seconds, 3),
        series=metrics.series(jobs, now - window, now, SLICES),
        **fleet,
    )


def _fleet(conn: Connection, settings: Settings, now: float) -> dict[str, object]:
    """The admin's extras: workers with their state and models, counts, the newest jobs."""
    nodes = {
        n.id: n
        for n in node_sql.list_nodes(
            conn, now - settings.quarantine_window_seconds, JOB_FAULT_CODES
        )
    }
    rows = overview_sql.worker_rows(conn, now - WORKERS_SHOWN_LEASES * settings.lease_seconds)
    names = overview_sql.model_names(
        conn, {sha for r in rows for sha in (*r.resident_models, *r.cached_first)}
    )
    workers = []
    for r in rows:
        node = nodes.get(r.node_id)
        caps = r.capabilities
        workers.append(
            WorkerSummary(
                id=r.id,
                node_id=r.node_id,
                state=metrics.worker_state(
                    last_seen_at=r.last_seen_at,
                    live_since=now - 3 * settings.lease_seconds,
                    running_jobs=r.running_jobs,
                    quarantined=bool(node and node.quarantined_at),
                ),
                gpu_name=str(caps.get("gpu_name", "cpu")),
                vram_mb=int(caps.get("vram_mb", 0)),  # type: ignore[call-overload]
                kinds=[str(k) for k in caps.get("kinds", [])],  # type: ignore[attr-defined]
                last_seen_at=to_datetime(r.last_seen_at),
                running_jobs=r.running_jobs,
                resident_models=[names.get(sha, sha[:12]) for sha in r.resident_models],
                cached_models=r.cached_count,
                cached_names=[names[sha] for sha in r.cached_first if sha in names],
                node_failures=node.recent_failures if node else 0,
                quarantine_reason=node.reason if node and node.quarantined_at else None,
            )
        )
    recent = [
        RecentJob(
            id=j.id,
            owner=j.owner,
            tier=j.tier,
            kind=j.kind,
            status=JobStatus(j.status),
            created_at=to_datetime(j.created_at),
            progress_step=j.progress_step,
            progress_total=j.progress_total,
        )
        for j in overview_sql.recent_jobs(conn, RECENT_JOBS)
    ]
    return {
        "workers": workers,
        "workers_by_state": dict(Counter(w.state for w in workers)),
        "workers_by_gpu": dict(Counter(w.gpu_name for w in workers)),
        "recent_jobs": recent,
    }
