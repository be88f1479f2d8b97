"""What the autoscaler writes down: one decision row per action it took (or failed to take) and
one status row per pool after each pass.

Kept apart from the control loop so that the loop reads as decide -> act, and so that what an
operator sees in `/v1/admin/scaling/decisions` and a pool's status has one writer.
"""

from __future__ import annotations

from collections.abc import Callable

from imagefleet.scaling.decide import Decision, Demand, PoolState
from imagefleet.scaling.pools import Pool
from imagefleet.scaling.providers.retry import ProviderHealth
from imagefleet.store import pools as pool_sql
from imagefleet.store.database import Database


class DecisionLog:
    """Writes decisions and statuses as the replica currently holding the leader lease."""

    def __init__(self, db: Database, holder: Callable[[], str]) -> None:
        self.db = db
        self.holder = holder

    def record(
        self,
        pool: str,
        action: str,
        now: float,
        *,
        current: int,
        desired: int,
        reason: str,
        instance_id: str | None = None,
        node_id: str | None = None,
        error: str | None = None,
    ) -> None:
        with self.db.write() as conn:
            pool_sql.record_decision(
                conn,
                pool=pool,
                action=action,
                current=current,
                desired=desired,
                reason=reason,
                instance_id=instance_id,
                node_id=node_id,
                error=error,
                decided_by=self.holder(),
                created_at=now,
            )

    def record_decision(
        self,
        pool: Pool,
        action: str,
        decision: Decision,
        now: float,
        instance_id: str | None = None,
        node_id: str | None = None,
        *,
        reason: str,
        desired: int | None = None,
    ) -> None:
        """One action taken on a scaling decision (up, down, drain, undrain)."""
        self.record(
            pool.name,
            action,
            now,
            current=decision.current,
            desired=decision.desired if desired is None else desired,
            reason=reason,
            instance_id=instance_id,
            node_id=node_id,
        )

    def save_status(
        self,
        pool: Pool,
        demand: Demand,
        decision: Decision | None,
        previous: PoolState | None,
        actual: int | None,
        health: ProviderHealth,
        now: float,
    ) -> None:
        """The pool's status after a pass; on a provider failure it keeps what was last decided
        and the error says why nothing changed."""
        if decision is not None and health.failures == 0:
            state = decision.state
            desired, wanted, rule, reason = (
                decision.desired,
                decision.wanted,
                decision.rule,
                decision.reason,
            )
        else:
            state = previous or PoolState(replicas=actual or 0)
            desired, wanted, rule = state.replicas, state.replicas, pool.rule
            reason = decision.reason if decision else "no decision: the provider failed"
        with self.db.write() as conn:
            pool_sql.save_status(
                conn,
                pool_sql.PoolStatusRow(
                    pool=pool.name,
                    desired=desired,
                    current=state.replicas,
                    wanted=wanted,
                    actual=actual,
                    queued=demand.queued,
                    running=demand.running,
                    rule=rule,
                    reason=reason,
                    history=state.wanted_history,
                    decided_at=now,
                    decided_by=self.holder(),
                    failures=health.failures,
                    last_error=health.last_error,
                    error_at=now if health.failures else None,
                    next_try_at=health.next_try_at if health.failures else None,
                ),
            )
