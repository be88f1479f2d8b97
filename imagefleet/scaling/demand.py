"""Demand per pool from the jobs the orchestrator holds: pure, so it is tested without a database.

A running job is its pool's (the pool its worker named when it claimed). A queued job is work
for every pool that serves it, but counting it in each would scale all of them for one job:
it goes to the cheapest pool that serves it and still has room under its `max` (ties by name),
or, when all are full, to the cheapest. Sizing by that split is what an operator expects of
"spill over to the dearer GPUs when the cheap ones run out".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from imagefleet.scaling.decide import Demand, ScaleInCandidate, TierDemand
from imagefleet.scaling.pools import Pool
from imagefleet.scaling.providers.base import Instance, InstanceState


@dataclass(frozen=True)
class WorkItem:
    """One queued or running job, as demand needs it. `pool` is the running attempt's pool
    (None while queued); `remaining` the share of its work left (1.0 while queued)."""

    kind: str
    pixels: int
    min_vram_mb: int | None
    model: str | None
    tier: str
    priority: int
    cost_units: float
    created_at: float
    running: bool
    pool: str | None = None
    remaining: float = 1.0


def pool_demands(
    pools: Sequence[Pool],
    items: Iterable[WorkItem],
    now: float,
    last_busy_at: Mapping[str, float],
    seconds_per_unit: Mapping[str, float],
) -> dict[str, Demand]:
    """The demand of every pool; a job no pool serves counts for none (the admin API shows it
    as queued work without a pool)."""
    by_price = sorted(pools, key=lambda p: (p.price_per_hour, p.name))
    counts: dict[str, int] = defaultdict(int)
    tiers: dict[str, dict[str, dict[str, float]]] = {p.name: {} for p in pools}
    priorities: dict[str, int] = {}
    oldest: dict[tuple[str, str], float] = {}
    for item in items:
        if item.running:
            target = item.pool if item.pool in tiers else None
        else:
            target = _cheapest_with_room(by_price, item, counts)
        if target is None:
            continue
        counts[target] += 1
        tier = tiers[target].setdefault(
            item.tier,
            {"queued": 0, "running": 0, "queued_units": 0.0, "running_remaining_units": 0.0},
        )
        priorities[item.tier] = item.priority
        if item.running:
            tier["running"] += 1
            tier["running_remaining_units"] += item.cost_units * max(0.0, item.remaining)
        else:
            tier["queued"] += 1
            tier["queued_units"] += item.cost_units
            age = max(0.0, now - item.created_at)
            oldest[(target, item.tier)] = max(oldest.get((target, item.tier), 0.0), age)
    demands = {}
    for pool in pools:
        pool_tiers = {
            name: TierDemand(
                queued=int(t["queued"]),
                running=int(t["running"]),
                queued_units=t["queued_units"],
                running_remaining_units=t["running_remaining_units"],
                oldest_queued_seconds=oldest.get((pool.name, name)),
                priority=priorities.get(name, 0),
            )
            for name, t in tiers[pool.name].items()
        }
        running = any(t.running for t in pool_tiers.values())
        demands[pool.name] = Demand(
            tiers=pool_tiers,
            last_busy_at=now if running else last_busy_at.get(pool.name),
            seconds_per_unit=seconds_per_unit.get(pool.gpu),
        )
    return demands


def _cheapest_with_room(
    by_price: Sequence[Pool], item: WorkItem, counts: Mapping[str, int]
) -> str | None:
    serving = [
        p for p in by_price if p.serves(item.kind, item.pixels, item.min_vram_mb, item.model)
    ]
    if not serving:
        return None
    for pool in serving:
        if counts.get(pool.name, 0) < pool.max:
            return pool.name
    return serving[0].name


@dataclass(frozen=True)
class NodeActivity:
    """What the workers of one node are doing, from the workers and attempts tables."""

    busy: bool = False
    idle_since: float | None = None
    drain_requested: bool = False
    busy_remaining_seconds: float | None = None


def scale_in_candidates(
    instances: Sequence[Instance], activity: Mapping[str, NodeActivity]
) -> list[ScaleInCandidate]:
    """The provider's live instances joined with their workers' activity (by node id). An
    instance whose worker never claimed is not ready: it is still starting."""
    result = []
    for instance in instances:
        if instance.state in (InstanceState.stopping, InstanceState.failed):
            continue
        seen = activity.get(instance.node_id or "")
        result.append(
            ScaleInCandidate(
                instance_id=instance.id,
                ready=seen is not None and instance.state is not InstanceState.starting,
                draining=instance.state is InstanceState.draining
                or (seen is not None and seen.drain_requested),
                busy=seen.busy if seen else False,
                idle_since=seen.idle_since if seen else None,
                started_at=instance.started_at,
                busy_remaining_seconds=seen.busy_remaining_seconds if seen else None,
            )
        )
    return result
