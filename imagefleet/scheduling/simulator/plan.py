"""Capacity planning: the cheapest fleet mix that keeps a tier's p95 wait under a target for a
given traffic, found by simulating candidate fleets on the same seeded workload.

The traffic is fixed first (generated against the config's own fleet), then only the fleet
varies. The search assumes more GPUs never make waits worse, which holds in the simulator up to
noise:

1. the largest fleet within bounds; if even it misses the target, no fleet within the bounds
   meets it and the search stops there;
2. for each GPU type alone, and for the config's own mix scaled up and down, a binary search for
   the smallest count that meets the target;
3. from the cheapest fleet found, remove GPUs one at a time (most expensive per hour first)
   while the target still holds.

Every fleet simulated is kept, so the answer can show what was tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from imagefleet.scheduling.decisions import SchedulingPolicy
from imagefleet.scheduling.simulator.config import FleetConfig, PlanSpec, SimConfig
from imagefleet.scheduling.simulator.engine import simulate
from imagefleet.scheduling.simulator.metrics import RunResult
from imagefleet.scheduling.simulator.workload import Workload

Counts = tuple[int, ...]


@dataclass(frozen=True)
class PlanPoint:
    """One simulated fleet."""

    counts: dict[str, int]
    p95_s: float
    meets_target: bool
    cost_per_day_usd: float
    cost_per_image_usd: float
    unfinished: int


@dataclass(frozen=True)
class PlanResult:
    target_p95_s: float
    tier: str
    best: PlanPoint | None
    tried: list[PlanPoint]
    exhausted: bool  # the simulation budget ran out before the search finished

    @property
    def message(self) -> str:
        if self.best is None:
            largest = max(self.tried, key=lambda p: sum(p.counts.values()), default=None)
            detail = (
                f" (the largest fleet tried, {_describe(largest.counts)}, reached "
                f"{largest.p95_s:.1f} s)"
                if largest is not None
                else ""
            )
            return (
                f"no fleet within the search bounds keeps {self.tier} p95 wait under "
                f"{self.target_p95_s:g} s{detail}; raise plan.max_per_type or the target"
            )
        best = self.best
        return (
            f"{_describe(best.counts)} keeps {self.tier} p95 wait at {best.p95_s:.1f} s "
            f"(target {self.target_p95_s:g} s) for ${best.cost_per_day_usd:,.2f} a day, "
            f"${best.cost_per_image_usd:.5f} an image"
        )


def _only(types: int, chosen: int, others: int, n: int) -> Counts:
    """n GPUs of type `chosen`, `others` of every other type."""
    return tuple(n if i == chosen else others for i in range(types))


def _describe(counts: dict[str, int]) -> str:
    parts = [f"{n} x {name}" for name, n in counts.items() if n]
    return " + ".join(parts) or "no GPU"


class Planner:
    def __init__(
        self,
        config: SimConfig,
        workload: Workload,
        policy: SchedulingPolicy,
        spec: PlanSpec | None = None,
        on_simulation: Callable[[PlanPoint], None] | None = None,
    ) -> None:
        self.config = config
        self.workload = workload
        self.policy = policy
        self.spec = spec or config.plan
        self.gpus = config.fleet.gpus
        self.on_simulation = on_simulation
        self.tried: dict[Counts, PlanPoint] = {}
        self.exhausted = False

    def _fleet(self, counts: Counts) -> FleetConfig:
        gpus = [
            gpu.model_copy(update={"count": n}) for gpu, n in zip(self.gpus, counts, strict=True)
        ]
        return self.config.fleet.model_copy(update={"gpus": gpus})

    def _cost_per_hour(self, counts: Counts) -> float:
        return sum(gpu.hourly_usd * n for gpu, n in zip(self.gpus, counts, strict=True))

    def evaluate(self, counts: Counts) -> PlanPoint | None:
        """The simulated outcome for `counts`, or None when the simulation budget is spent."""
        if counts in self.tried:
            return self.tried[counts]
        if sum(counts) == 0:
            return None
        if len(self.tried) >= self.spec.max_simulations:
            self.exhausted = True
            return None
        result: RunResult = simulate(self.config, self.workload, self.policy, self._fleet(counts))
        stats = result.wait.get(self.spec.tier)
        p95 = stats.p95 if stats is not None else 0.0
        point = PlanPoint(
            counts={gpu.name: n for gpu, n in zip(self.gpus, counts, strict=True)},
            p95_s=p95 if not result.unfinished else math.inf,
            meets_target=result.unfinished == 0 and p95 <= self.spec.target_p95_s,
            cost_per_day_usd=24 * self._cost_per_hour(counts),
            cost_per_image_usd=result.fleet_cost_usd / result.images if result.images else math.inf,
            unfinished=result.unfinished,
        )
        self.tried[counts] = point
        if self.on_simulation is not None:
            self.on_simulation(point)
        return point

    def _meets(self, counts: Counts) -> bool:
        point = self.evaluate(counts)
        return point is not None and point.meets_target

    def run(self) -> PlanResult:
        low, high = self.spec.min_per_type, self.spec.max_per_type
        types = len(self.gpus)
        if self._meets(tuple([high] * types)):
            feasible: list[Counts] = [tuple([high] * types)]
            for t in range(types):
                found = self._smallest(partial(_only, types, t, low))
                if found is not None:
                    feasible.append(found)
            mix = [gpu.count for gpu in self.gpus]
            if any(mix):
                found = self._smallest(lambda n: self._scaled(mix, n), top=high * types)
                if found is not None:
                    feasible.append(found)
            self._trim(min(feasible, key=self._cost_per_hour))
        return self._result()

    def _scaled(self, mix: list[int], total: int) -> Counts:
        """The config's mix scaled to about `total` GPUs, within bounds."""
        factor = total / sum(mix)
        low, high = self.spec.min_per_type, self.spec.max_per_type
        return tuple(min(high, max(low, round(n * factor))) for n in mix)

    def _smallest(self, shape: Callable[[int], Counts], top: int | None = None) -> Counts | None:
        """Binary search on n for the smallest `shape(n)` that meets the target."""
        low = max(1, self.spec.min_per_type)
        high = top or self.spec.max_per_type
        if not self._meets(shape(high)):
            return None
        while low < high:
            middle = (low + high) // 2
            point = self.evaluate(shape(middle))
            if point is None:
                break
            if point.meets_target:
                high = middle
            else:
                low = middle + 1
        return shape(high)

    def _trim(self, counts: Counts) -> Counts:
        order = sorted(range(len(self.gpus)), key=lambda i: -self.gpus[i].hourly_usd)
        improved = True
        while improved:
            improved = False
            for index in order:
                if counts[index] <= self.spec.min_per_type:
                    continue
                smaller = tuple(n - 1 if i == index else n for i, n in enumerate(counts))
                if self._meets(smaller):
                    counts = smaller
                    improved = True
                    break
        return counts

    def _result(self) -> PlanResult:
        feasible = [p for p in self.tried.values() if p.meets_target]
        best = min(feasible, key=lambda p: p.cost_per_day_usd, default=None)
        return PlanResult(
            target_p95_s=self.spec.target_p95_s,
            tier=self.spec.tier,
            best=best,
            tried=list(self.tried.values()),
            exhausted=self.exhausted,
        )


def plan(
    config: SimConfig,
    workload: Workload,
    policy: SchedulingPolicy,
    spec: PlanSpec | None = None,
    on_simulation: Callable[[PlanPoint], None] | None = None,
) -> PlanResult:
    """The cheapest fleet found that meets `spec` (default: the config's `plan` section)."""
    return Planner(config, workload, policy, spec, on_simulation).run()
