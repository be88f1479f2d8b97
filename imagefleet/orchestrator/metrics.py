"""Prometheus `/metrics`: the queue per pool and tier, workers, replicas, finished jobs, seconds
per image, billable seconds and cost, the webhook backlog and model usage.

Every value is read from the database when scraped (a custom collector), not counted in this
process: replicas share nothing but the database, so any replica answers for the whole fleet
and a scrape of two replicas gives the same figures. Counters are totals over what the store
still holds; the retention duty deleting old jobs makes them fall, which Prometheus treats as
a counter reset (rates stay right). Names follow Prometheus conventions: base units (seconds,
USD), `_total` for counters. The queue and replica metrics are what KEDA or an HPA scale on
(docs/autoscaling.md).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from imagefleet.orchestrator.autoscaler_pools import PoolService
from imagefleet.scaling.demand import pool_demands
from imagefleet.scaling.pricing import SECONDS_PER_HOUR
from imagefleet.store import demand as demand_sql
from imagefleet.store import fleet_metrics as sql
from imagefleet.store import pools as pool_sql
from imagefleet.store.database import Database

# s/image buckets: from a distilled model on a big GPU to SDXL on a slow card.
SECONDS_PER_IMAGE_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
NO_POOL = ""


class FleetCollector(Collector):
    def __init__(
        self, db: Database, pools: PoolService, lease_seconds: float, tiers: dict[str, int]
    ) -> None:
        self.db = db
        self.pools = pools
        self.seen_within = 3 * lease_seconds
        self.tiers = tiers

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        pools = self.pools.pools()
        prices = self.pools.prices()
        with self.db.read() as conn:
            fleet = demand_sql.snapshot(conn, now - self.seen_within, self.tiers)
            statuses = pool_sql.statuses(conn)
            finished = sql.finished_jobs(conn)
            billed = sql.billed(conn)
            per_image = sql.seconds_per_image(conn, SECONDS_PER_IMAGE_BUCKETS)
            usage = sql.model_usage(conn)
            backlog = sql.webhook_backlog(conn)
            running_total = sql.running_attempts(conn)
        views = self.pools.views(now)
        demands = pool_demands(pools, fleet.items, now, fleet.last_busy_at, {})

        depth = GaugeMetricFamily(
            "imagefleet_queue_depth", "Queued jobs the pool can serve", labels=["pool", "tier"]
        )
        oldest = GaugeMetricFamily(
            "imagefleet_oldest_queued_seconds",
            "Age of the oldest queued job the pool can serve",
            labels=["pool", "tier"],
        )
        running = GaugeMetricFamily(
            "imagefleet_running_jobs", "Jobs running on the pool's workers", labels=["pool"]
        )
        served = 0
        for name, demand in demands.items():
            running.add_metric([name], demand.running)
            for tier, t in demand.tiers.items():
                depth.add_metric([name, tier], t.queued)
                oldest.add_metric([name, tier], t.oldest_queued_seconds or 0.0)
                served += t.queued
        unserved: dict[str, int] = defaultdict(int)
        for item in fleet.items:
            if not item.running:
                unserved[item.tier] += 1
        for tier, n in unserved.items():
            for name in demands:
                n -= demands[name].tiers[tier].queued if tier in demands[name].tiers else 0
            if n > 0:  # queued work no pool serves: shown under pool=""
                depth.add_metric([NO_POOL, tier], n)
        running.add_metric(
            [NO_POOL], max(0, running_total - sum(d.running for d in demands.values()))
        )
        yield from (depth, oldest, running)

        workers = GaugeMetricFamily(
            "imagefleet_workers",
            "Workers seen recently, by pool and state",
            labels=["pool", "state"],
        )
        for view in views:
            for state in ("idle", "busy", "draining"):
                workers.add_metric([view.name, state], view.workers.get(state, 0))
        desired = GaugeMetricFamily(
            "imagefleet_desired_replicas", "Replicas the autoscaler wants", labels=["pool"]
        )
        actual = GaugeMetricFamily(
            "imagefleet_actual_replicas", "Instances the provider reported", labels=["pool"]
        )
        errors = GaugeMetricFamily(
            "imagefleet_provider_failures",
            "Consecutive failed provider calls (0: healthy)",
            labels=["pool"],
        )
        for name, status in statuses.items():
            desired.add_metric([name], status.desired)
            if status.actual is not None:
                actual.add_metric([name], status.actual)
            errors.add_metric([name], status.failures)
        yield from (workers, desired, actual, errors)

        jobs = CounterMetricFamily(
            "imagefleet_jobs_finished",
            "Finished jobs by kind and outcome",
            labels=["kind", "outcome"],
        )
        for kind, outcome, n in finished:
            jobs.add_metric([kind, outcome], n)
        yield jobs

        seconds = CounterMetricFamily(
            "imagefleet_billable_seconds", "Lease seconds of ended attempts", labels=["pool", "gpu"]
        )
        cost = CounterMetricFamily(
            "imagefleet_cost_usd",
            "Cost of ended attempts at the pools' prices",
            labels=["pool", "gpu"],
        )
        for pool, gpu, total in billed:
            hourly = prices.hourly(pool, gpu)
            seconds.add_metric([pool or NO_POOL, gpu or ""], total)
            cost.add_metric(
                [pool or NO_POOL, gpu or ""],
                0.0 if hourly is None else total * hourly / SECONDS_PER_HOUR,
            )
        yield from (seconds, cost)

        histogram = HistogramMetricFamily(
            "imagefleet_seconds_per_image", "Lease seconds per delivered image", labels=["gpu"]
        )
        for gpu, under, count, total in per_image:
            buckets = [
                (str(float(bound)), n)
                for bound, n in zip(SECONDS_PER_IMAGE_BUCKETS, under, strict=True)
            ]
            buckets.append(("+Inf", count))
            histogram.add_metric([gpu or ""], buckets, sum_value=total)
        yield histogram

        yield GaugeMetricFamily(
            "imagefleet_webhook_backlog", "Webhook deliveries not yet delivered", value=backlog
        )
        model_jobs = CounterMetricFamily(
            "imagefleet_model_attempts", "Attempts per model and pool", labels=["model", "pool"]
        )
        cache = CounterMetricFamily(
            "imagefleet_model_cache",
            "Where an attempt's checkpoint was at claim: gpu (hit), disk (hit), miss",
            labels=["pool", "result"],
        )
        per_model: dict[tuple[str, str], int] = defaultdict(int)
        per_cache: dict[tuple[str, str], int] = defaultdict(int)
        for name, pool, result, n in usage:
            per_model[(name, pool or NO_POOL)] += n
            if result is not None:
                per_cache[(pool or NO_POOL, result)] += n
        for labels, n in sorted(per_model.items()):
            model_jobs.add_metric(list(labels), n)
        for labels, n in sorted(per_cache.items()):
            cache.add_metric(list(labels), n)
        yield from (model_jobs, cache)


def registry_for(
    db: Database, pools: PoolService, lease_seconds: float, tiers: dict[str, int]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(db, pools, lease_seconds, tiers))
    return registry
