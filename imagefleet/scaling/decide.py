"""Scaling decisions: how many workers a pool should have, and which go first on scale-in.

Pure functions of their inputs (no I/O, no clock), so the orchestrator's control loop, the
benchmark and the tests run the same code. The loop computes a `Demand` per pool from the
database, keeps each pool's `PoolState` between calls, and acts on the `Decision`.

Why the shape of the rules:
- Scale-up is immediate (within `scale_up_step`): a queue that waits for capacity loses users.
- Scale-down waits: the count only falls to the highest count wanted during the last
  `scale_down_cooldown_seconds` (a stabilization window, as Kubernetes' HPA does), so a burst
  that pauses for a moment does not pay a second cold start.
- A pool that had work within `idle_to_zero_seconds` keeps one worker warm, so it goes to zero
  only after that long without work, not between two jobs of a sparse stream. Only one: counting
  every worker busy within the window would keep a whole spike's fleet for as long as jobs keep
  landing on each of them, which a pull queue spreading claims over idle workers makes forever
  (bench/autoscale.py measured that variant at up to 1.34x a fixed fleet's cost per image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from imagefleet.scaling.pools import Pool


@dataclass(frozen=True)
class TierDemand:
    """The work of one client tier that a pool can serve, as the orchestrator counts it."""

    queued: int = 0
    running: int = 0
    queued_units: float = 0.0
    running_remaining_units: float = 0.0
    arrival_units_per_second: float = 0.0
    oldest_queued_seconds: float | None = None
    priority: int = 0


@dataclass(frozen=True)
class Demand:
    """What a pool is asked for now. `tiers` is keyed by tier name; `last_busy_at` is when a
    worker of the pool last ran a job (`now` while one runs, None if never);
    `seconds_per_unit` is measured on the pool's GPU type."""

    tiers: Mapping[str, TierDemand] = field(default_factory=dict)
    last_busy_at: float | None = None
    seconds_per_unit: float | None = None

    @property
    def queued(self) -> int:
        return sum(tier.queued for tier in self.tiers.values())

    @property
    def running(self) -> int:
        return sum(tier.running for tier in self.tiers.values())

    @property
    def oldest_queued_seconds(self) -> float | None:
        ages = [t.oldest_queued_seconds for t in self.tiers.values() if t.oldest_queued_seconds]
        return max(ages) if ages else None


@dataclass(frozen=True)
class PoolState:
    """What a decision remembers for the next one: the replica count the provider was asked
    for, and the counts wanted (after limits) within the cooldown window."""

    replicas: int
    wanted_history: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True)
class Decision:
    pool: str
    current: int
    desired: int
    wanted: int
    rule: str
    reason: str
    state: PoolState

    @property
    def action(self) -> Literal["up", "down", "hold"]:
        if self.desired > self.current:
            return "up"
        return "down" if self.desired < self.current else "hold"


def decide_scale(pool: Pool, demand: Demand, now: float, state: PoolState) -> Decision:
    """Desired replicas for `pool`, with a reason a person can read in the API."""
    if pool.rule == "throughput":
        rule, wanted, why = _throughput_rule(pool, demand)
    else:
        rule, wanted, why = "queue", *_queue_rule(demand)
    idle = None if demand.last_busy_at is None else now - demand.last_busy_at
    if wanted == 0 and idle is not None and idle < pool.idle_to_zero_seconds:
        wanted = 1
        why += f", last busy {idle:.0f}s ago (idle-to-zero {pool.idle_to_zero_seconds:.0f}s)"
    why += f" -> {wanted}"
    limited = min(max(wanted, pool.min), pool.max)
    if limited > wanted:
        why += f", raised to min {pool.min}"
    elif limited < wanted:
        why += f", clamped to max {pool.max}"

    window_start = now - pool.scale_down_cooldown_seconds
    history = (*(e for e in state.wanted_history if e[0] > window_start), (now, limited))
    current = state.replicas
    desired, step_why = _step(pool, current, limited, max(n for _, n in history))
    return Decision(
        pool=pool.name,
        current=current,
        desired=desired,
        wanted=wanted,
        rule=rule,
        reason=why + step_why,
        state=PoolState(desired, history),
    )


def _queue_rule(demand: Demand) -> tuple[int, str]:
    """One worker per job that needs one now: running plus queued."""
    return demand.running + demand.queued, f"{demand.queued} queued + {demand.running} running"


def _throughput_rule(pool: Pool, demand: Demand) -> tuple[str, int, str]:
    """Enough workers that every tier's newest job starts within its target wait.

    With seconds-per-unit s, a tier's work ahead of a new job is the backlog (queued plus the
    rest of running) of that tier and every tier of higher priority; N workers clear it in
    s * backlog / N, while arrivals of those tiers keep s * rate workers busy. So a tier needs
    s * (rate + backlog / target) workers; the pool needs the most any tier needs, and never more
    than one per job it has now plus those the arrivals keep busy.
    """
    spu = demand.seconds_per_unit or pool.seconds_per_unit
    if spu is None:
        wanted, why = _queue_rule(demand)
        return "queue", wanted, f"no s/unit measured for {pool.gpu} yet: {why}"
    needs: list[tuple[float, str]] = []
    for name, tier in demand.tiers.items():
        ahead = [t for t in demand.tiers.values() if t.priority >= tier.priority]
        backlog = sum(t.queued_units + t.running_remaining_units for t in ahead)
        rate = sum(t.arrival_units_per_second for t in ahead)
        target = pool.target_wait(name)
        needs.append((spu * (rate + backlog / target), f"{name} {target:.0f}s"))
    if not needs:
        return "throughput", 0, "throughput: no work"
    need, which = max(needs)
    inflow = spu * sum(t.arrival_units_per_second for t in demand.tiers.values())
    cap = demand.running + demand.queued + math.ceil(inflow - 1e-9)
    # A float a hair above an integer (3.0000000001) is that integer, not one more worker.
    wanted = min(math.ceil(need - 1e-9), cap)
    units = sum(t.queued_units + t.running_remaining_units for t in demand.tiers.values())
    why = (
        f"throughput at {spu:.3g} s/unit: {units:.0f} units queued or running, arrivals keep "
        f"{inflow:.1f} workers busy; {which} target needs {need:.1f}"
    )
    if wanted < math.ceil(need - 1e-9):
        why += f", capped at {cap} (one per job plus arrivals)"
    return "throughput", wanted, why


def _step(pool: Pool, current: int, target: int, held: int) -> tuple[int, str]:
    """Moves from `current` toward `target`: up at most one step, down only to `held` (the
    highest target within the cooldown window)."""
    if target > current:
        if pool.scale_up_step is not None and target - current > pool.scale_up_step:
            desired = current + pool.scale_up_step
            return desired, f"; up from {current} by step {pool.scale_up_step} to {desired}"
        return target, ""
    if target < current:
        if held >= current:
            return current, (
                f"; holding {current} until the {pool.scale_down_cooldown_seconds:.0f}s "
                f"cooldown passes (wanted {held} within it)"
            )
        if held > target:
            return held, (
                f"; down from {current} to {held}, the most wanted in the last "
                f"{pool.scale_down_cooldown_seconds:.0f}s"
            )
        return target, (
            f"; down from {current} after the {pool.scale_down_cooldown_seconds:.0f}s cooldown"
        )
    return target, ""


@dataclass(frozen=True)
class ScaleInCandidate:
    """A pool's instance as scale-in sees it: the provider's view joined with the worker's."""

    instance_id: str
    ready: bool = True
    draining: bool = False
    busy: bool = False
    idle_since: float | None = None
    started_at: float | None = None
    busy_remaining_seconds: float | None = None


@dataclass(frozen=True)
class Victim:
    """An instance to remove. A busy one is drained: it stops claiming and finishes its job
    first; an idle one can go at once (it is drained too, so it cannot claim meanwhile)."""

    instance_id: str
    busy: bool


def choose_victims(instances: Sequence[ScaleInCandidate], n: int) -> list[Victim]:
    """The `n` instances to remove, cheapest loss first: those already draining (they are on
    their way out), then ones still starting (newest first: least cold start sunk), then idle
    ones (longest idle first: least likely to have warm models), and only then busy ones
    (soonest done first), which are drained and never stopped mid-job."""

    def order(c: ScaleInCandidate) -> tuple[int, float, str]:
        if c.draining:
            return (0, 0.0, c.instance_id)
        if not c.ready:
            return (1, -(c.started_at or 0.0), c.instance_id)
        if not c.busy:
            idle = c.idle_since if c.idle_since is not None else c.started_at
            return (2, idle if idle is not None else -math.inf, c.instance_id)
        remaining = c.busy_remaining_seconds
        return (3, remaining if remaining is not None else math.inf, c.instance_id)

    chosen = sorted(instances, key=order)[: max(n, 0)]
    return [Victim(c.instance_id, busy=c.busy) for c in chosen]


@dataclass(frozen=True)
class ScalePlan:
    """What the loop does with a decision. `replicas` goes to `provider.scale_to`; `remove`
    are idle victims to `provider.drain` first (so the provider deletes exactly them);
    `stop_claiming` are busy victims whose workers the orchestrator tells to drain: they keep
    their place (counted in `replicas`) until their job is done, and a later decision removes
    them, idle, before anyone else."""

    replicas: int
    remove: tuple[str, ...] = ()
    stop_claiming: tuple[str, ...] = ()


def plan_scale(decision: Decision, instances: Sequence[ScaleInCandidate]) -> ScalePlan:
    """Turns a decision into provider calls that never remove a worker mid-job."""
    if decision.desired >= decision.current:
        return ScalePlan(decision.desired)
    victims = choose_victims(instances, decision.current - decision.desired)
    busy = tuple(v.instance_id for v in victims if v.busy)
    idle = tuple(v.instance_id for v in victims if not v.busy)
    return ScalePlan(decision.desired + len(busy), remove=idle, stop_claiming=busy)
