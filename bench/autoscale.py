"""Scaling rules under a 10x viral spike: cost per image and paid-tier p95 wait, per provider.

A small discrete-event model of one pool (no processes, no HTTP): Poisson arrivals at a base
rate, ten times that rate for the spike, then the base rate again; 20% paid jobs (served
first), the rest free; each job's cost units from its size and steps, its service time from
seconds per unit with lognormal noise. Workers pull the next job the moment they are free.
A worker is paid from the moment it is asked for (cold start included) until it is removed.

The autoscaled rows run the real `imagefleet.scaling.decide.decide_scale` and `plan_scale`
(with `choose_victims`) every `--tick` seconds on the model's demand, and the real
`imagefleet.scaling.pricing` on the resulting attempt records; busy victims are drained (they
finish their job first). Cold starts (scale request to first claim: image pull plus model
load) per provider are assumptions, not measurements: local processes 15 s, a Kubernetes pod
on a warm node 90 s, a SaladCloud node pulling a multi-GB image over a residential link 300 s.

Baseline: a fixed fleet sized for the spike (its peak load at 80% utilization), warm from the
start. Ratios are against it, in the same run, on the same arrivals (same seeds).

    .venv/bin/python bench/autoscale.py            # defaults: 5 seeds
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagefleet.scaling.decide import (
    Demand,
    PoolState,
    ScaleInCandidate,
    TierDemand,
    decide_scale,
    plan_scale,
)
from imagefleet.scaling.pools import LocalSettings, Pool
from imagefleet.scaling.pricing import (
    AttemptRecord,
    PriceTable,
    WorkerSpan,
    fleet_usage,
    seconds_per_unit,
)

PROVIDERS = {"local": 15.0, "kubernetes": 90.0, "salad": 300.0}
PRIORITY = {"paid": 10, "free": 0}
SIZES = ((512, 512), (768, 768), (1024, 1024))
GPU = "RTX 4090"
HEADROOM = 4  # warm workers kept by the last rule, for providers slow to start
ARRIVAL_WINDOW = 60.0  # seconds of arrivals the throughput rule's rate is measured over


@dataclass(frozen=True)
class Scenario:
    base_rate: float = 0.4  # jobs/s
    spike_factor: float = 10.0
    base_seconds: float = 900.0  # before the spike
    spike_seconds: float = 900.0
    after_seconds: float = 1800.0
    paid_share: float = 0.2
    seconds_per_unit: float = 0.13  # ~4 s for 1024x1024, 30 steps
    price_per_hour: float = 0.30
    tick: float = 5.0

    @property
    def end(self) -> float:
        return self.base_seconds + self.spike_seconds + self.after_seconds

    def rate(self, t: float) -> float:
        spiking = self.base_seconds <= t < self.base_seconds + self.spike_seconds
        return self.base_rate * (self.spike_factor if spiking else 1.0)


@dataclass
class Job:
    id: int
    tier: str
    arrival: float
    units: float
    service: float
    start: float | None = None
    end: float | None = None


@dataclass
class Worker:
    id: str
    requested_at: float
    ready_at: float
    job: Job | None = None
    last_busy_end: float | None = None
    draining: bool = False
    removed_at: float | None = None

    def ready(self, now: float) -> bool:
        return self.ready_at <= now


def arrivals(scenario: Scenario, rng: random.Random) -> list[Job]:
    """Poisson arrivals by thinning against the peak rate, so every rule sees the same jobs."""
    peak = scenario.base_rate * scenario.spike_factor
    jobs: list[Job] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= scenario.end:
            return jobs
        if rng.random() * peak >= scenario.rate(t):
            continue
        width, height = rng.choice(SIZES)
        units = width * height * rng.choice((20, 30, 40)) / 1e6
        service = units * scenario.seconds_per_unit * rng.lognormvariate(0.0, 0.2)
        tier = "paid" if rng.random() < scenario.paid_share else "free"
        jobs.append(Job(len(jobs), tier, t, units, service))


class Fleet:
    """The pool under one rule: events, dispatch, and the control loop when autoscaled."""

    def __init__(
        self,
        scenario: Scenario,
        jobs: list[Job],
        cold_start: float,
        rng: random.Random,
        pool: Pool | None = None,
        fixed: int = 0,
    ) -> None:
        self.scenario, self.cold_start, self.rng, self.pool = scenario, cold_start, rng, pool
        self.jobs = [Job(j.id, j.tier, j.arrival, j.units, j.service) for j in jobs]
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.workers: list[Worker] = []
        self.queues: dict[str, deque[Job]] = {"paid": deque(), "free": deque()}
        self.arrived: dict[str, deque[Job]] = {"paid": deque(), "free": deque()}
        self.attempts: list[AttemptRecord] = []
        self.recent: deque[AttemptRecord] = deque(maxlen=200)
        self.state = PoolState(0)
        self.decisions = 0
        for job in self.jobs:
            self.push(job.arrival, "arrive", job)
        for _ in range(fixed):
            self.workers.append(Worker(f"w{len(self.workers)}", 0.0, 0.0))
        if pool is not None:
            self.push(0.0, "tick", None)

    def push(self, t: float, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def run(self) -> float:
        now = 0.0
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                self.queues[payload.tier].append(payload)
                self.arrived[payload.tier].append(payload)
            elif kind == "done":
                self.finish(payload, now)
            elif kind == "tick":
                self.control(now)
                if now < self.scenario.end or any(self.queues.values()) or self.busy():
                    self.push(now + self.scenario.tick, "tick", None)
            self.dispatch(now)
        return now

    def busy(self) -> bool:
        return any(w.job is not None for w in self.workers)

    def dispatch(self, now: float) -> None:
        for worker in self.workers:
            if worker.removed_at is not None or worker.draining or worker.job is not None:
                continue
            if not worker.ready(now):
                continue
            queue = self.queues["paid"] or self.queues["free"]
            if not queue:
                return
            job = queue.popleft()
            job.start, worker.job = now, job
            self.push(now + job.service, "done", worker)

    def finish(self, worker: Worker, now: float) -> None:
        job = worker.job
        assert job is not None and job.start is not None
        job.end, worker.job, worker.last_busy_end = now, None, now
        record = AttemptRecord(
            str(job.id), str(job.id), worker.id, "spike", GPU, job.start, now, "succeeded",
            images=1, cost_units=job.units,
        )  # fmt: skip
        self.attempts.append(record)
        self.recent.append(record)
        if worker.draining:
            worker.removed_at = now

    def control(self, now: float) -> None:
        """One pass of the control loop, as the orchestrator will run it."""
        assert self.pool is not None
        active = [w for w in self.workers if w.removed_at is None]
        ends = [w.last_busy_end for w in self.workers if w.last_busy_end is not None]
        demand = Demand(
            {tier: self.tier_demand(tier, now) for tier in self.queues},
            last_busy_at=now if self.busy() else max(ends, default=None),
            seconds_per_unit=seconds_per_unit(self.recent).get(GPU),
        )
        state = PoolState(len(active), self.state.wanted_history)
        decision = decide_scale(self.pool, demand, now, state)
        self.state, self.decisions = decision.state, self.decisions + 1
        candidates = [
            ScaleInCandidate(
                w.id, ready=w.ready(now), draining=w.draining, busy=w.job is not None,
                idle_since=w.last_busy_end, started_at=w.ready_at,
                busy_remaining_seconds=(w.job.start + w.job.service - now)
                if w.job and w.job.start is not None else None,
            )
            for w in active
        ]  # fmt: skip
        plan = plan_scale(decision, candidates)
        by_id = {w.id: w for w in active}
        for instance_id in plan.remove:
            by_id[instance_id].removed_at = now
        for instance_id in plan.stop_claiming:
            by_id[instance_id].draining = True
        for _ in range(plan.replicas - len(active)):
            ready_at = now + self.cold_start * self.rng.uniform(0.7, 1.5)
            self.workers.append(Worker(f"w{len(self.workers)}", now, ready_at))

    def tier_demand(self, tier: str, now: float) -> TierDemand:
        queued = self.queues[tier]
        running = [w.job for w in self.workers if w.job is not None and w.job.tier == tier]
        recent = self.arrived[tier]
        while recent and recent[0].arrival < now - ARRIVAL_WINDOW:
            recent.popleft()
        return TierDemand(
            queued=len(queued),
            running=len(running),
            queued_units=sum(j.units for j in queued),
            running_remaining_units=sum(
                j.units * max(0.0, 1 - (now - (j.start or now)) / j.service) for j in running
            ),
            arrival_units_per_second=sum(j.units for j in recent) / ARRIVAL_WINDOW,
            oldest_queued_seconds=now - queued[0].arrival if queued else None,
            priority=PRIORITY[tier],
        )


@dataclass
class Outcome:
    cost_per_image: float
    images_per_dollar: float
    idle_share: float
    mean_workers: float
    paid_p95_wait: float
    free_p95_wait: float
    peak_workers: int
    extra: dict[str, float] = field(default_factory=dict)


def measure(fleet: Fleet, scenario: Scenario) -> Outcome:
    end = max(scenario.end, fleet.run())
    spans = [
        WorkerSpan(w.id, "spike", GPU, w.requested_at, w.removed_at if w.removed_at else end)
        for w in fleet.workers
    ]
    prices = PriceTable(by_pool={"spike": scenario.price_per_hour})
    (usage,) = fleet_usage(fleet.attempts, prices, 0.0, end + 1e-9, spans)
    assert usage.cost is not None and usage.images == len(fleet.jobs)
    waits: dict[str, list[float]] = {"paid": [], "free": []}
    for job in fleet.jobs:
        assert job.start is not None
        waits[job.tier].append(job.start - job.arrival)
    return Outcome(
        cost_per_image=usage.cost / usage.images,
        images_per_dollar=usage.images_per_dollar or 0.0,
        idle_share=usage.idle_share or 0.0,
        mean_workers=usage.paid_seconds / end,
        paid_p95_wait=percentile(waits["paid"], 95),
        free_p95_wait=percentile(waits["free"], 95),
        peak_workers=peak_concurrent(spans),
    )


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1)]


def peak_concurrent(spans: list[WorkerSpan]) -> int:
    edges = sorted([(s.started_at, 1) for s in spans] + [(s.ended_at, -1) for s in spans])
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def pool_for(rule: str, scenario: Scenario, max_workers: int, low: int = 0) -> Pool:
    return Pool(
        name="spike", gpu=GPU, vram_mb=24564, price_per_hour=scenario.price_per_hour,
        min=low, max=max_workers, scale_down_cooldown_seconds=120, idle_to_zero_seconds=300,
        rule=rule, target_wait_seconds=120, target_wait_seconds_by_tier={"paid": 30},
        seconds_per_unit=scenario.seconds_per_unit, provider=LocalSettings(type="local"),
    )  # fmt: skip


def run(seeds: int, scenario: Scenario) -> dict[str, dict[str, list[Outcome]]]:
    mean_service = statistics.fmean(
        w * h * s / 1e6 * scenario.seconds_per_unit for w, h in SIZES for s in (20, 30, 40)
    ) * math.exp(0.2**2 / 2)
    peak_fleet = math.ceil(scenario.base_rate * scenario.spike_factor * mean_service / 0.8)
    base_fleet = math.ceil(scenario.base_rate * mean_service / 0.8)
    rules: dict[str, Callable[[list[Job], float, random.Random], Fleet]] = {
        f"fixed, sized for the spike ({peak_fleet})": lambda jobs, cold, rng: Fleet(
            scenario, jobs, cold, rng, fixed=peak_fleet
        ),
        f"fixed, sized for the base load ({base_fleet})": lambda jobs, cold, rng: Fleet(
            scenario, jobs, cold, rng, fixed=base_fleet
        ),
        "queue: running + queued": lambda jobs, cold, rng: Fleet(
            scenario, jobs, cold, rng, pool=pool_for("queue", scenario, 3 * peak_fleet)
        ),
        "throughput: paid 30 s, free 120 s": lambda jobs, cold, rng: Fleet(
            scenario, jobs, cold, rng, pool=pool_for("throughput", scenario, 3 * peak_fleet)
        ),
        f"throughput, min {HEADROOM} warm": lambda jobs, cold, rng: Fleet(
            scenario,
            jobs,
            cold,
            rng,
            pool=pool_for("throughput", scenario, 3 * peak_fleet, HEADROOM),
        ),
    }
    results: dict[str, dict[str, list[Outcome]]] = {p: {r: [] for r in rules} for p in PROVIDERS}
    for seed in range(seeds):
        jobs = arrivals(scenario, random.Random(seed))
        for provider, cold in PROVIDERS.items():
            for name, build in rules.items():
                fleet = build(jobs, cold, random.Random(1000 + seed))
                results[provider][name].append(measure(fleet, scenario))
    return results


def report(results: dict[str, dict[str, list[Outcome]]]) -> None:
    for provider, rules in results.items():
        print(f"\n### {provider} (cold start {PROVIDERS[provider]:.0f} s)\n")
        print("| rule | mean workers | peak | $/1k images | vs fixed | images/$ | idle share "
              "| paid p95 wait (s) | vs fixed | free p95 wait (s) |")  # fmt: skip
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        baseline = next(iter(rules.values()))
        base_cost = statistics.fmean(o.cost_per_image for o in baseline)
        base_wait = statistics.fmean(o.paid_p95_wait for o in baseline)
        for name, outcomes in rules.items():
            cost = statistics.fmean(o.cost_per_image for o in outcomes)
            wait = statistics.fmean(o.paid_p95_wait for o in outcomes)
            wait_ratio = f"{wait / base_wait:.1f}x" if base_wait > 0 else "-"
            print(
                f"| {name} | {statistics.fmean(o.mean_workers for o in outcomes):.1f} "
                f"| {max(o.peak_workers for o in outcomes)} | {1000 * cost:.3f} "
                f"| {cost / base_cost:.2f}x "
                f"| {statistics.fmean(o.images_per_dollar for o in outcomes):.0f} "
                f"| {statistics.fmean(o.idle_share for o in outcomes):.0%} "
                f"| {wait:.1f} | {wait_ratio} "
                f"| {statistics.fmean(o.free_p95_wait for o in outcomes):.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="Arrival sequences to average.")
    parser.add_argument("--base-rate", type=float, default=Scenario.base_rate, help="jobs/s")
    parser.add_argument("--spike-factor", type=float, default=Scenario.spike_factor)
    parser.add_argument("--tick", type=float, default=Scenario.tick, help="Control loop period.")
    args = parser.parse_args()
    scenario = Scenario(base_rate=args.base_rate, spike_factor=args.spike_factor, tick=args.tick)
    started = time.perf_counter()
    results = run(args.seeds, scenario)
    print(
        f"10x spike model: {scenario.base_rate} jobs/s for {scenario.base_seconds:.0f} s, "
        f"x{scenario.spike_factor:g} for {scenario.spike_seconds:.0f} s, then "
        f"{scenario.after_seconds:.0f} s at the base rate; {scenario.paid_share:.0%} paid; "
        f"${scenario.price_per_hour}/worker-hour; {args.seeds} seeds; tick {scenario.tick} s"
    )
    report(results)
    print(f"\n({time.perf_counter() - started:.1f} s of model time on this machine)")


if __name__ == "__main__":
    main()
