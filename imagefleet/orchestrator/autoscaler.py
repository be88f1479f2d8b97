"""The control loop: every few seconds, on the replica holding the leader lease, for each pool:
demand from the database -> `decide_scale` -> `plan_scale` -> provider calls; and quarantined
nodes handed to their provider for replacement.

Scale-in never kills a job: victims are chosen by `choose_victims`; an idle one is marked
drained (it can no longer claim) and removed through the provider; a busy one is only asked to
drain through its claim and heartbeat answers, keeps its place in the count, and is removed by
a later pass once its job has ended. When demand returns first, drained workers are kept
rather than new ones started.

A provider call that fails is retried inside the call (`call_with_retry`), then the pool backs
off (`ProviderHealth`) with the error in its status; nothing a provider does stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from imagefleet.blocking import run_blocking
from imagefleet.config import Settings
from imagefleet.orchestrator.autoscaler_pools import PoolService
from imagefleet.orchestrator.autoscaler_records import DecisionLog
from imagefleet.orchestrator.leader import LeaderLease
from imagefleet.scaling.decide import Decision, Demand, PoolState, decide_scale, plan_scale
from imagefleet.scaling.demand import NodeActivity, pool_demands, scale_in_candidates
from imagefleet.scaling.pools import Pool
from imagefleet.scaling.pricing import seconds_per_unit
from imagefleet.scaling.providers import provider_for
from imagefleet.scaling.providers.base import Instance, InstanceState, Provider, ProviderError
from imagefleet.scaling.providers.retry import ProviderHealth, RetryPolicy
from imagefleet.store import demand as demand_sql
from imagefleet.store import pools as pool_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import Database

log = logging.getLogger("imagefleet.autoscaler")
KEPT_DECISIONS = 10_000
DRAIN_REASON = "scale-in: the autoscaler is removing this worker"

ProviderFactory = Callable[[Pool, RetryPolicy], Provider]


@dataclass
class _PoolRuntime:
    """What the leader keeps per pool between passes (lost on a takeover, rebuilt from the
    database and the provider)."""

    config: str
    provider: Provider | None = None
    health: ProviderHealth = field(default_factory=ProviderHealth)


class Autoscaler:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        pools: PoolService,
        *,
        lease: LeaderLease | None = None,
        providers: ProviderFactory = provider_for,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings
        self.pools = pools
        self.lease = lease or LeaderLease(db, settings.leader_lease_seconds)
        self.providers = providers
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self._runtime: dict[str, _PoolRuntime] = {}
        self._rng = random.Random()
        self.decisions = DecisionLog(db, lambda: self.holder)

    @property
    def holder(self) -> str:
        return self.lease.holder

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await run_blocking(self.tick)
                except Exception:
                    log.exception("autoscaler pass failed; retrying")
                await asyncio.sleep(self.settings.autoscale_interval_seconds)
        finally:
            await run_blocking(self.close)

    def close(self) -> None:
        """Closes the providers' clients (the local provider drains its workers) and hands the
        lease on, so another replica takes over without waiting for it to expire."""
        self._drop_providers()
        try:
            self.lease.release()
        except Exception as exc:  # the lease then simply expires
            log.warning("could not release the autoscaler lease: %s", exc)

    def tick(self) -> bool:
        """One pass; False when another replica leads (and nothing was done)."""
        now = self.clock()
        if not self.lease.try_lead(now):
            self._drop_providers()
            return False
        pools = self.pools.pools()
        with self.db.read() as conn:
            fleet = demand_sql.snapshot(
                conn,
                now - 3 * self.settings.lease_seconds,
                self.settings.tier_priority,
                measure=any(p.rule == "throughput" for p in pools),
            )
            statuses = pool_sql.statuses(conn)
        demands = pool_demands(
            pools, fleet.items, now, fleet.last_busy_at, seconds_per_unit(fleet.recent)
        )
        for name in set(self._runtime) - {p.name for p in pools}:
            self._close(name)
        for pool in pools:
            if not self.lease.try_lead(self.clock()):  # a slow provider outlasted the lease
                return False
            self._scale(pool, demands[pool.name], fleet, statuses.get(pool.name))
        with self.db.write() as conn:
            pool_sql.prune_decisions(conn, KEPT_DECISIONS)
        return True

    # --- one pool ----------------------------------------------------------------------------

    def _scale(
        self,
        pool: Pool,
        demand: Demand,
        fleet: demand_sql.FleetSnapshot,
        status: pool_sql.PoolStatusRow | None,
    ) -> None:
        now = self.clock()
        runtime = self._runtime_for(pool)
        previous = PoolState(status.desired, status.history) if status else None
        if not runtime.health.may_try(now):
            return
        decision: Decision | None = None
        actual: int | None = None
        try:
            provider = self._provider(pool, runtime)
            instances = provider.list_instances()
            live = [
                i for i in instances if i.state in (InstanceState.starting, InstanceState.running)
            ]
            actual = len(live)
            decision = decide_scale(pool, demand, now, previous or PoolState(replicas=actual))
            self._act(pool, provider, decision, live, fleet.activity, now)
            self._replace_quarantined(pool, provider, instances, fleet.quarantined, now)
            runtime.health = runtime.health.succeeded()
        except ProviderError as exc:
            self._failed(pool, runtime, exc, now, decision, previous)
        except Exception as exc:  # a provider bug must not stop the other pools
            log.exception("pool %s: autoscaling failed", pool.name)
            self._failed(pool, runtime, _Unexpected(str(exc)), now, decision, previous)
        self.decisions.save_status(pool, demand, decision, previous, actual, runtime.health, now)

    def _act(
        self,
        pool: Pool,
        provider: Provider,
        decision: Decision,
        live: list[Instance],
        activity: dict[str, NodeActivity],
        now: float,
    ) -> None:
        candidates = scale_in_candidates(live, activity)
        node_of = {i.id: i.node_id for i in live}
        drained = [c for c in candidates if c.draining]
        active = [c for c in candidates if not c.draining]
        keep = drained[: max(0, decision.desired - len(active))]
        if keep:
            self._undrain(pool, decision, [node_of[c.instance_id] for c in keep], now)
            kept = {c.instance_id for c in keep}
            active += keep
            drained = [c for c in drained if c.instance_id not in kept]
        plan = plan_scale(
            Decision(
                pool=decision.pool,
                current=len(active),
                desired=decision.desired,
                wanted=decision.wanted,
                rule=decision.rule,
                reason=decision.reason,
                state=decision.state,
            ),
            active,
        )
        gone = [*plan.remove, *(c.instance_id for c in drained if not c.busy)]
        still_busy = [c.instance_id for c in drained if c.busy]
        replicas = decision.desired + len(plan.stop_claiming) + len(still_busy)
        with self.db.write() as conn:
            worker_sql.request_drain(
                conn,
                [n for i in (*plan.stop_claiming, *gone) if (n := node_of.get(i))],
                DRAIN_REASON,
                now,
            )
        for instance_id in plan.stop_claiming:
            self.decisions.record_decision(
                pool,
                "drain",
                decision,
                now,
                instance_id,
                node_of.get(instance_id),
                reason=f"busy: finishing its job first; {decision.reason}",
            )
        for instance_id in gone:
            provider.drain(instance_id)
        if replicas != len(active) + len(still_busy) or gone:
            provider.scale_to(replicas)
            action = "up" if replicas > len(active) + len(still_busy) else "down"
            self.decisions.record_decision(
                pool, action, decision, now, reason=decision.reason, desired=replicas
            )
            log.info("pool %s: %d -> %d (%s)", pool.name, len(live), replicas, decision.reason)

    def _undrain(self, pool: Pool, decision: Decision, nodes: list[str | None], now: float) -> None:
        ids = [n for n in nodes if n]
        with self.db.write() as conn:
            worker_sql.cancel_drain(conn, ids)
        for node in ids:
            self.decisions.record_decision(
                pool,
                "undrain",
                decision,
                now,
                node_id=node,
                reason=f"demand came back: keeping it rather than starting another; "
                f"{decision.reason}",
            )

    def _replace_quarantined(
        self,
        pool: Pool,
        provider: Provider,
        instances: list[Instance],
        quarantined: dict[str, float],
        now: float,
    ) -> None:
        """Hands each quarantined node of this pool to its provider once per quarantine."""
        for instance in instances:
            since = quarantined.get(instance.node_id or "")
            if since is None or instance.state in (InstanceState.stopping, InstanceState.failed):
                continue
            with self.db.read() as conn:
                if pool_sql.replaced_since(conn, instance.node_id or "", since):
                    continue
            provider.replace(instance.id)
            log.warning(
                "pool %s: node %s is quarantined; its instance %s was handed to the %s "
                "provider for replacement",
                pool.name,
                instance.node_id,
                instance.id,
                provider.kind,
            )
            self.decisions.record(
                pool.name,
                "replace",
                now,
                current=0,
                desired=0,
                reason=f"node {instance.node_id} is quarantined",
                instance_id=instance.id,
                node_id=instance.node_id,
            )

    # --- providers and their health -----------------------------------------------------------

    def _failed(
        self,
        pool: Pool,
        runtime: _PoolRuntime,
        exc: ProviderError,
        now: float,
        decision: Decision | None,
        previous: PoolState | None,
    ) -> None:
        first = runtime.health.failures == 0
        runtime.health = runtime.health.failed(exc, now, self.policy, self._rng.random())
        log.warning(
            "pool %s: %s; next try in %.0fs",
            pool.name,
            exc,
            runtime.health.next_try_at - now,
        )
        if first:
            current = previous.replicas if previous else 0
            self.decisions.record(
                pool.name,
                "error",
                now,
                current=current,
                desired=decision.desired if decision else current,
                reason=decision.reason if decision else "listing the instances",
                error=str(exc),
            )
        if isinstance(exc, _Unexpected) or not exc.retryable:
            self._close(pool.name, keep_health=True)  # a fresh client may fix what this one broke

    def _runtime_for(self, pool: Pool) -> _PoolRuntime:
        config = pool.provider.model_dump_json()
        runtime = self._runtime.get(pool.name)
        if runtime is None or runtime.config != config:
            if runtime is not None:
                self._close(pool.name)
            runtime = self._runtime[pool.name] = _PoolRuntime(config)
        return runtime

    def _provider(self, pool: Pool, runtime: _PoolRuntime) -> Provider:
        if runtime.provider is None:
            runtime.provider = self.providers(pool, self.policy)
        return runtime.provider

    def _close(self, name: str, *, keep_health: bool = False) -> None:
        runtime = self._runtime.get(name)
        if runtime is None:
            return
        if runtime.provider is not None:
            try:
                runtime.provider.close()
            except Exception as exc:
                log.warning("pool %s: closing its provider failed: %s", name, exc)
            runtime.provider = None
        if not keep_health:
            del self._runtime[name]

    def _drop_providers(self) -> None:
        for name in list(self._runtime):
            self._close(name)


class _Unexpected(ProviderError):
    """A provider raised something that is not a ProviderError (a bug): shown like one."""

    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__("provider", "call", message)
