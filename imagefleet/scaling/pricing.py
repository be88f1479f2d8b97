"""Cost accounting, pure: what each attempt and job cost, and what the fleet delivers per dollar.

An attempt is billable from its claim to its end (the time its worker held the lease, model
load and upload included), whatever its outcome: a failed attempt was paid for too, and its
cost lands on its job. The fleet view also counts the time workers were up without a job
(`idle share`), because clouds bill a worker for every second it is up; `images per dollar` is
therefore images over everything paid, not over busy time only.

Inputs are plain records the orchestrator reads from its attempts and workers tables, so the
same functions serve the job record, `/v1/usage`, `/v1/admin/usage`, the CLI and benchmarks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from imagefleet.scaling.pools import PoolsConfig

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class PriceTable:
    """USD per worker-hour, by pool (which wins) and by GPU type."""

    by_pool: Mapping[str, float] = field(default_factory=dict)
    by_gpu: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: PoolsConfig) -> PriceTable:
        return cls(
            by_pool={name: pool.price_per_hour for name, pool in config.pools.items()},
            by_gpu=dict(config.prices),
        )

    def hourly(self, pool: str | None, gpu: str | None) -> float | None:
        """The hourly price for a worker of this pool or GPU type; None when neither is known."""
        if pool is not None and pool in self.by_pool:
            return self.by_pool[pool]
        if gpu is not None and gpu in self.by_gpu:
            return self.by_gpu[gpu]
        return None


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt as accounting needs it. `ended_at` None: still running (billed up to now).
    `images` counts outputs accepted from this attempt; `cost_units` is the job's cost estimate
    (its kind's `requirements`); `training_steps` the steps it completed (training kinds)."""

    job_id: str
    attempt_id: str
    worker_id: str
    pool: str | None
    gpu: str | None
    claimed_at: float
    ended_at: float | None
    outcome: str
    images: int = 0
    cost_units: float = 0.0
    training_steps: int = 0


@dataclass(frozen=True)
class WorkerSpan:
    """When a worker was up (first seen to last seen), for the idle time between its jobs."""

    worker_id: str
    pool: str | None
    gpu: str | None
    started_at: float
    ended_at: float


def billable_seconds(attempt: AttemptRecord, now: float) -> float:
    """Claim to end (or to `now` while it runs); never negative, whatever the clocks did."""
    end = attempt.ended_at if attempt.ended_at is not None else now
    return max(0.0, end - attempt.claimed_at)


def attempt_cost(attempt: AttemptRecord, prices: PriceTable, now: float) -> float | None:
    """USD for the attempt's lease time; None when its pool and GPU have no price."""
    hourly = prices.hourly(attempt.pool, attempt.gpu)
    if hourly is None:
        return None
    return billable_seconds(attempt, now) * hourly / SECONDS_PER_HOUR


@dataclass(frozen=True)
class JobCost:
    """A job's bill: every attempt's lease time and cost. `unpriced_seconds` is lease time on
    workers with no price (not in `cost`); per-image and per-step costs are None without any."""

    job_id: str
    attempts: int
    billable_seconds: float
    cost: float
    unpriced_seconds: float
    images: int
    training_steps: int

    @property
    def cost_per_image(self) -> float | None:
        return self.cost / self.images if self.images else None

    @property
    def cost_per_step(self) -> float | None:
        return self.cost / self.training_steps if self.training_steps else None


def job_costs(
    attempts: Iterable[AttemptRecord], prices: PriceTable, now: float
) -> dict[str, JobCost]:
    """The cost of each job the attempts belong to, keyed by job id."""
    by_job: dict[str, list[AttemptRecord]] = defaultdict(list)
    for attempt in attempts:
        by_job[attempt.job_id].append(attempt)
    return {job_id: job_cost(job_id, rows, prices, now) for job_id, rows in by_job.items()}


def job_cost(
    job_id: str, attempts: Sequence[AttemptRecord], prices: PriceTable, now: float
) -> JobCost:
    cost = unpriced = seconds = 0.0
    for attempt in attempts:
        billed = billable_seconds(attempt, now)
        seconds += billed
        price = attempt_cost(attempt, prices, now)
        if price is None:
            unpriced += billed
        else:
            cost += price
    return JobCost(
        job_id=job_id,
        attempts=len(attempts),
        billable_seconds=seconds,
        cost=cost,
        unpriced_seconds=unpriced,
        images=sum(a.images for a in attempts),
        training_steps=sum(a.training_steps for a in attempts),
    )


@dataclass(frozen=True)
class FleetUsage:
    """What one pool (and GPU type) delivered in a window, and what it cost."""

    pool: str | None
    gpu: str | None
    images: int
    busy_seconds: float
    paid_seconds: float
    cost: float | None
    window_seconds: float

    @property
    def images_per_hour(self) -> float:
        return self.images * SECONDS_PER_HOUR / self.window_seconds if self.window_seconds else 0.0

    @property
    def seconds_per_image(self) -> float | None:
        """GPU (lease) seconds per image: the fleet's cost driver, independent of idle time."""
        return self.busy_seconds / self.images if self.images else None

    @property
    def images_per_dollar(self) -> float | None:
        return self.images / self.cost if self.cost else None

    @property
    def idle_share(self) -> float | None:
        """The share of paid worker time without a job."""
        if not self.paid_seconds:
            return None
        return max(0.0, 1.0 - self.busy_seconds / self.paid_seconds)


def fleet_usage(
    attempts: Iterable[AttemptRecord],
    prices: PriceTable,
    start: float,
    end: float,
    spans: Iterable[WorkerSpan] = (),
) -> list[FleetUsage]:
    """Per (pool, GPU type), over the window [start, end): images from attempts that ended in
    it, busy time (lease time inside it) and paid time (worker up-time inside it). A worker
    without a span is taken to be up from its first claim to its last end, which misses its
    start-up and its idle tail: pass spans (the workers table) for the real idle share; each
    is widened to cover the worker's own attempts."""
    busy: dict[tuple[str | None, str | None], float] = defaultdict(float)
    images: dict[tuple[str | None, str | None], int] = defaultdict(int)
    derived: dict[str, WorkerSpan] = {}
    for a in attempts:
        group = (a.pool, a.gpu)
        finish = a.ended_at if a.ended_at is not None else end
        busy[group] += _overlap(a.claimed_at, finish, start, end)
        if a.ended_at is not None and start <= a.ended_at < end:
            images[group] += a.images
        seen = derived.get(a.worker_id)
        derived[a.worker_id] = WorkerSpan(
            a.worker_id,
            a.pool,
            a.gpu,
            min(a.claimed_at, seen.started_at) if seen else a.claimed_at,
            max(finish, seen.ended_at) if seen else finish,
        )
    for span in spans:
        # The workers table's span, widened by its attempts: a worker busy with a long job
        # is not seen claiming meanwhile, but it is paid for.
        seen = derived.get(span.worker_id)
        derived[span.worker_id] = WorkerSpan(
            span.worker_id,
            span.pool,
            span.gpu,
            min(span.started_at, seen.started_at) if seen else span.started_at,
            max(span.ended_at, seen.ended_at) if seen else span.ended_at,
        )
    paid: dict[tuple[str | None, str | None], float] = defaultdict(float)
    for span in derived.values():
        paid[(span.pool, span.gpu)] += _overlap(span.started_at, span.ended_at, start, end)

    usage = []
    for group in sorted(set(busy) | set(paid), key=lambda g: (g[0] or "", g[1] or "")):
        hourly = prices.hourly(*group)
        # Lease time outside a worker's recorded span (clock skew) is still paid time.
        paid_seconds = max(paid[group], busy[group])
        usage.append(
            FleetUsage(
                pool=group[0],
                gpu=group[1],
                images=images[group],
                busy_seconds=busy[group],
                paid_seconds=paid_seconds,
                cost=None if hourly is None else paid_seconds * hourly / SECONDS_PER_HOUR,
                window_seconds=end - start,
            )
        )
    return usage


def seconds_per_unit(attempts: Iterable[AttemptRecord]) -> dict[str, float]:
    """Measured lease seconds per cost unit, per GPU type, from succeeded attempts: what the
    throughput rule sizes pools with (model loads and uploads included, as the fleet pays)."""
    seconds: dict[str, float] = defaultdict(float)
    units: dict[str, float] = defaultdict(float)
    for a in attempts:
        if a.outcome != "succeeded" or a.ended_at is None or a.gpu is None or a.cost_units <= 0:
            continue
        seconds[a.gpu] += billable_seconds(a, a.ended_at)
        units[a.gpu] += a.cost_units
    return {gpu: seconds[gpu] / units[gpu] for gpu in units}


def _overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    return max(0.0, min(a_end, b_end) - max(a_start, b_start))
