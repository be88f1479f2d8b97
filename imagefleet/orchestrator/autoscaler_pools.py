"""Pools as the orchestrator serves them: seeded from the pools file, listed with their status
and workers, edited live through the admin API (the control loop reads them every pass).

An edit is validated as the file is (min <= max, ...), so a pool in the database is always one
the pools file could have said.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from pydantic import ValidationError
from sqlalchemy import select

from imagefleet.errors import InvalidField, NotFound
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.protocol import AttemptOutcome
from imagefleet.scaling.pools import Pool, PoolsConfig
from imagefleet.scaling.pricing import PriceTable
from imagefleet.scaling.wire import DecisionView, PoolEdit, PoolStatusView, PoolView
from imagefleet.store import pools as pool_sql
from imagefleet.store.database import Database
from imagefleet.store.tables import attempts, workers

log = logging.getLogger("imagefleet.autoscaler")


class PoolService:
    def __init__(
        self,
        db: Database,
        config: PoolsConfig | None,
        lease_seconds: float,
        gpu_prices: Mapping[str, float] | None = None,
    ) -> None:
        self.db = db
        self.has_file = config is not None
        self.config = config or PoolsConfig()
        # IMAGEFLEET_GPU_PRICES: per GPU type, under the pools file's [prices] (which win).
        self.gpu_prices = dict(gpu_prices or {})
        # A worker not seen for this long is gone (three leases: it would have renewed).
        self.seen_within = 3 * lease_seconds

    def seed(self, now: float) -> None:
        """Writes the pools file's pools into the database (edits made since win) and, when
        a file is configured, removes the pools it no longer has. Without a file the stored
        pools stay (another replica's file put them there)."""
        with self.db.write() as conn:
            kept = pool_sql.seed_pools(conn, list(self.config.pools.values()), now)
            gone = (
                pool_sql.remove_pools_except(conn, list(self.config.pools)) if self.has_file else []
            )
        for name in gone:
            log.warning("pool %s is no longer in the pools file; removed", name)
        for name in kept:
            log.warning(
                "pool %s was edited through the API; keeping those settings over the pools file "
                "(reset it with `imagefleet pools reset %s`)",
                name,
                name,
            )

    def pools(self) -> list[Pool]:
        with self.db.read() as conn:
            return [stored.pool for stored in pool_sql.list_pools(conn)]

    def prices(self) -> PriceTable:
        """The price table: each pool's price as stored (edits included), the file's per GPU,
        then IMAGEFLEET_GPU_PRICES for GPU types the file leaves out (the one table that job
        costs, /v1/usage, /metrics and the dashboard all read)."""
        return PriceTable(
            by_pool={pool.name: pool.price_per_hour for pool in self.pools()},
            by_gpu={**self.gpu_prices, **self.config.prices},
        )

    def views(self, now: float, name: str | None = None) -> list[PoolView]:
        with self.db.read() as conn:
            stored = pool_sql.list_pools(conn)
            status = pool_sql.statuses(conn)
            seen = conn.execute(
                select(workers.c.id, workers.c.pool, workers.c.drain_requested_at).where(
                    workers.c.last_seen_at >= now - self.seen_within,
                    workers.c.pool.is_not(None),
                )
            ).all()
            busy = set(
                conn.execute(
                    select(attempts.c.worker_id).where(
                        attempts.c.outcome == AttemptOutcome.running.value
                    )
                ).scalars()
            )
        counts: dict[str, Counter[str]] = {}
        for worker_id, pool, drained in seen:
            state = "draining" if drained is not None else "busy" if worker_id in busy else "idle"
            counts.setdefault(pool, Counter())[state] += 1
        return [
            PoolView(
                name=row.pool.name,
                settings=row.pool,
                edited_at=to_datetime(row.edited_at) if row.edited_at else None,
                workers=dict(counts.get(row.pool.name, {})),
                status=_status_view(status.get(row.pool.name)),
            )
            for row in stored
            if name is None or row.pool.name == name
        ]

    def view(self, name: str, now: float) -> PoolView:
        found = self.views(now, name)
        if not found:
            raise NotFound(f"no pool named {name!r}")
        return found[0]

    def edit(self, name: str, edit: PoolEdit, now: float) -> PoolView:
        """Applies an edit, validated as the pools file is; 422 names the bad field."""
        with self.db.write() as conn:
            stored = pool_sql.get_pool(conn, name)
            if stored is None:
                raise NotFound(f"no pool named {name!r}")
            changes = edit.model_dump(exclude_none=True)
            try:
                pool = Pool.model_validate({**stored.pool.model_dump(), **changes})
            except ValidationError as exc:
                error = exc.errors()[0]
                field = str(error["loc"][0]) if error["loc"] else "body"
                message = str(error["msg"]).removeprefix("Value error, ")
                raise InvalidField(("body", field), message) from exc
            pool_sql.save_pool(conn, pool, now, edited=True)
        log.info("pool %s edited through the API: %s", name, changes)
        return self.view(name, now)

    def reset(self, name: str, now: float) -> PoolView:
        """Puts the pools file's settings back (the file wins again at every start)."""
        configured = self.config.pools.get(name)
        if configured is None:
            raise NotFound(f"pool {name!r} is not in the pools file; nothing to reset it to")
        with self.db.write() as conn:
            if not pool_sql.save_pool(conn, configured, now, edited=False):
                raise NotFound(f"no pool named {name!r}")
        return self.view(name, now)

    def decisions(self, name: str | None, limit: int) -> list[DecisionView]:
        with self.db.read() as conn:
            rows = pool_sql.decisions(conn, name, limit)
        return [
            DecisionView(
                id=row.id,
                pool=row.pool,
                action=row.action,
                current=row.current,
                desired=row.desired,
                reason=row.reason,
                instance_id=row.instance_id,
                node_id=row.node_id,
                error=row.error,
                decided_by=row.decided_by,
                created_at=to_datetime(row.created_at),
            )
            for row in rows
        ]


def _status_view(row: pool_sql.PoolStatusRow | None) -> PoolStatusView | None:
    if row is None:
        return None
    return PoolStatusView(
        desired=row.desired,
        wanted=row.wanted,
        actual=row.actual,
        queued=row.queued,
        running=row.running,
        rule=row.rule,
        reason=row.reason,
        decided_at=to_datetime(row.decided_at),
        decided_by=row.decided_by,
        provider_error=row.last_error,
        failures=row.failures,
        next_try_at=to_datetime(row.next_try_at) if row.next_try_at else None,
    )
