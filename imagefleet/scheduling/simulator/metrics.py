"""What a run measured, per policy: throughput, where GPU time went, loads, waits, cost.

Definitions (docs/simulator.md):
- **wait**: submit to the moment the attempt that completed the job started generating (queue
  time, plus its downloads and loads, plus any attempt lost to an interruption). `queue wait`
  is submit to first claim, the part the policy's aging bound governs.
- **images per dollar (fleet)**: images over what the fixed fleet cost from the start to the
  last completion. **images per dollar (busy)**: images over the cost of the GPU time spent
  generating, loading, downloading or lost, what an elastic fleet billed per second of work
  would pay; this is the efficiency a policy controls, the fleet figure adds the idle time the
  fleet's size decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from imagefleet.scheduling.simulator.engine import Simulation

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class WaitStats:
    jobs: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, waits: np.ndarray) -> WaitStats:
        if len(waits) == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99 = (float(v) for v in np.percentile(waits, PERCENTILES))
        return cls(len(waits), p50, p95, p99, float(waits.max()), float(waits.mean()))


@dataclass(frozen=True)
class RunResult:
    policy: str
    jobs: int
    unfinished: int
    images: int
    horizon_s: float
    makespan_s: float
    gpus: int
    provisioned_s: float
    generating_s: float
    loading_s: float
    downloading_s: float
    lost_s: float
    idle_s: float
    loads: int
    adapter_loads: int
    downloads: int
    checkpoint_downloads: int
    download_bytes: int
    lost_attempts: int
    deferrals: int
    fleet_cost_usd: float
    busy_cost_usd: float
    wait: dict[str, WaitStats]
    queue_wait: dict[str, WaitStats]
    duplicate_completions: int
    waits: np.ndarray = field(repr=False)
    owners: np.ndarray = field(repr=False)
    owner_names: list[str] = field(repr=False)
    tiers: np.ndarray = field(repr=False)
    tier_names: tuple[str, ...] = field(repr=False)

    @property
    def images_per_hour(self) -> float:
        return self.images / (self.makespan_s / 3600.0)

    @property
    def images_per_dollar(self) -> float:
        return self.images / self.fleet_cost_usd if self.fleet_cost_usd else 0.0

    @property
    def images_per_busy_dollar(self) -> float:
        return self.images / self.busy_cost_usd if self.busy_cost_usd else 0.0

    @property
    def loads_per_1000_images(self) -> float:
        return 1000.0 * self.loads / self.images if self.images else 0.0

    @property
    def downloads_per_1000_images(self) -> float:
        return 1000.0 * self.downloads / self.images if self.images else 0.0

    @property
    def max_wait_s(self) -> float:
        return max((stats.max for stats in self.wait.values()), default=0.0)

    def time_split(self) -> dict[str, float]:
        """Fractions of provisioned GPU time."""
        total = self.provisioned_s or 1.0
        return {
            "generating": self.generating_s / total,
            "loading": self.loading_s / total,
            "downloading": self.downloading_s / total,
            "lost": self.lost_s / total,
            "idle": self.idle_s / total,
        }

    def owner_p95(
        self, owners: list[str] | None = None, exclude: str | None = None
    ) -> dict[str, float]:
        """p95 wait per tier over the jobs of `owners` (all when None), less owner `exclude`."""
        mask = np.ones(len(self.waits), dtype=bool)
        if owners is not None:
            wanted = [self.owner_names.index(name) for name in owners]
            mask &= np.isin(self.owners, wanted)
        if exclude is not None:
            mask &= self.owners != self.owner_names.index(exclude)
        out = {}
        for index, name in enumerate(self.tier_names):
            selected = self.waits[mask & (self.tiers == index)]
            if len(selected):
                out[name] = float(np.percentile(selected, 95))
        return out

    def per_owner_p95(self, min_jobs: int) -> dict[str, float]:
        """p95 wait of every owner with at least `min_jobs` jobs."""
        out = {}
        counts = np.bincount(self.owners, minlength=len(self.owner_names))
        for owner in np.flatnonzero(counts >= min_jobs):
            out[self.owner_names[owner]] = float(
                np.percentile(self.waits[self.owners == owner], 95)
            )
        return out

    def summary(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "policy": self.policy,
            "jobs": self.jobs,
            "unfinished": self.unfinished,
            "images": self.images,
            "gpus": self.gpus,
            "horizon_s": self.horizon_s,
            "makespan_s": self.makespan_s,
            "images_per_hour": self.images_per_hour,
            "gpu_time_split": self.time_split(),
            "gpu_seconds": {
                "provisioned": self.provisioned_s,
                "generating": self.generating_s,
                "loading": self.loading_s,
                "downloading": self.downloading_s,
                "lost": self.lost_s,
                "idle": self.idle_s,
            },
            "loads": self.loads,
            "adapter_loads": self.adapter_loads,
            "downloads": self.downloads,
            "checkpoint_downloads": self.checkpoint_downloads,
            "download_bytes": self.download_bytes,
            "loads_per_1000_images": self.loads_per_1000_images,
            "downloads_per_1000_images": self.downloads_per_1000_images,
            "lost_attempts": self.lost_attempts,
            "deferrals": self.deferrals,
            "wait_s": {tier: vars(stats) for tier, stats in self.wait.items()},
            "queue_wait_s": {tier: vars(stats) for tier, stats in self.queue_wait.items()},
            "max_wait_s": self.max_wait_s,
            "fleet_cost_usd": self.fleet_cost_usd,
            "busy_cost_usd": self.busy_cost_usd,
            "images_per_dollar": self.images_per_dollar,
            "images_per_busy_dollar": self.images_per_busy_dollar,
        }


def collect(sim: Simulation, end: float) -> RunResult:
    w = sim.workload
    waits = np.asarray(sim.wait)
    queue_waits = np.asarray(sim.queue_wait)
    done = ~np.isnan(waits)
    per_tier: dict[str, WaitStats] = {}
    per_tier_queue: dict[str, WaitStats] = {}
    for index, name in enumerate(w.tier_names):
        rows = done & (w.tier == index)
        per_tier[name] = WaitStats.of(waits[rows])
        per_tier_queue[name] = WaitStats.of(queue_waits[rows])
    workers = sim.workers
    provisioned = sum(x.provisioned_s for x in workers)
    generating = sum(x.generating_s for x in workers)
    loading = sum(x.loading_s for x in workers)
    downloading = sum(x.downloading_s for x in workers)
    lost = sum(x.lost_s for x in workers)
    fleet_cost = sum(x.provisioned_s * x.gpu.hourly_usd for x in workers) / 3600.0
    busy_cost = (
        sum(
            (x.generating_s + x.loading_s + x.downloading_s + x.lost_s) * x.gpu.hourly_usd
            for x in workers
        )
        / 3600.0
    )
    completions = np.asarray(sim.completions)
    return RunResult(
        policy=sim.policy.name,
        jobs=w.jobs,
        unfinished=int((completions == 0).sum()),
        images=sim.images_done,
        horizon_s=w.horizon_s,
        makespan_s=end,
        gpus=len(workers),
        provisioned_s=provisioned,
        generating_s=generating,
        loading_s=loading,
        downloading_s=downloading,
        lost_s=lost,
        idle_s=provisioned - generating - loading - downloading - lost,
        loads=sum(x.loads for x in workers),
        adapter_loads=sum(x.adapter_loads for x in workers),
        downloads=sum(x.downloads for x in workers),
        checkpoint_downloads=sum(x.checkpoint_downloads for x in workers),
        download_bytes=sum(x.download_bytes for x in workers),
        lost_attempts=sim.lost_attempts,
        deferrals=sim.deferrals,
        fleet_cost_usd=fleet_cost,
        busy_cost_usd=busy_cost,
        wait=per_tier,
        queue_wait=per_tier_queue,
        duplicate_completions=int((completions > 1).sum()),
        waits=np.where(done, waits, np.inf),
        owners=w.owner,
        owner_names=w.owner_names,
        tiers=w.tier,
        tier_names=w.tier_names,
    )
