"""Several policies on one seeded workload, and the workload's description for reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from imagefleet.scheduling.policies import make_policy
from imagefleet.scheduling.simulator.config import FleetConfig, SimConfig
from imagefleet.scheduling.simulator.engine import simulate
from imagefleet.scheduling.simulator.metrics import RunResult
from imagefleet.scheduling.simulator.workload import Workload, fleet_capacity

# Called with (policy name, jobs finished, jobs in all).
PolicyProgress = Callable[[str, int, int], None]


def compare(
    config: SimConfig,
    workload: Workload,
    policy_names: Sequence[str],
    fleet: FleetConfig | None = None,
    progress: PolicyProgress | None = None,
) -> list[RunResult]:
    """Runs each named policy (see `scheduling.policies`) on the same workload and fleet."""
    policy_config = config.policy_config()
    results = []
    for name in policy_names:
        policy = make_policy(name, policy_config)
        report = None if progress is None else _bind(progress, name)
        results.append(simulate(config, workload, policy, fleet, report))
    return results


def _bind(progress: PolicyProgress, name: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(name, done, total)


def describe(
    config: SimConfig, workload: Workload, fleet: FleetConfig | None = None
) -> dict[str, Any]:
    """The workload and fleet in numbers, for JSON output and docs/benchmarks.md."""
    fleet = fleet or config.fleet
    capacity = fleet_capacity(fleet)
    horizon = workload.horizon_s
    return {
        "seed": config.seed,
        "hours": horizon / 3600,
        "jobs": workload.jobs,
        "images": int(workload.images.sum()),
        "jobs_per_tier": {
            name: int((workload.tier == i).sum()) for i, name in enumerate(workload.tier_names)
        },
        "batch_jobs": {
            name: int((workload.owner == workload.owner_names.index(name)).sum())
            for name in workload.batch_owners
        },
        "hub_jobs_per_s_mean": workload.background_jobs_per_s,
        "offered_load": float(workload.cost.sum()) / (capacity * horizon),
        "gpus": {gpu.name: gpu.count for gpu in fleet.gpus},
        "fleet_usd_per_hour": sum(gpu.count * gpu.hourly_usd for gpu in fleet.gpus),
        "checkpoints": config.workload.checkpoints.count,
        "checkpoint_zipf": config.workload.checkpoints.zipf,
        "loras": config.workload.loras.count,
        "lora_zipf": config.workload.loras.zipf,
    }
