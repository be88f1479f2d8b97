"""Pools as stored (seeded from the pools file, edited through the admin API), the control
loop's status and decision log per pool, and the leader lease that picks the replica running it.

Plain rows in, plain rows out; validation is `scaling/pools.py`'s, mapping to wire models the
autoscaler views'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagefleet.scaling.pools import Pool
from imagefleet.store.tables_autoscaling import leader_leases, pool_status, pools, scaling_decisions


@dataclass(frozen=True)
class StoredPool:
    pool: Pool
    created_at: float
    updated_at: float
    edited_at: float | None


@dataclass(frozen=True)
class PoolStatusRow:
    pool: str
    desired: int
    current: int
    wanted: int
    actual: int | None
    queued: int
    running: int
    rule: str
    reason: str
    history: tuple[tuple[float, int], ...]
    decided_at: float
    decided_by: str
    failures: int
    last_error: str | None
    error_at: float | None
    next_try_at: float | None


@dataclass(frozen=True)
class DecisionRow:
    id: int
    pool: str
    action: str
    current: int
    desired: int
    reason: str
    instance_id: str | None
    node_id: str | None
    error: str | None
    decided_by: str
    created_at: float


def seed_pools(conn: Connection, configured: list[Pool], now: float) -> list[str]:
    """Writes the pools file's pools, except those edited through the API since (their edits
    win until the pool is reset). Returns the names kept as edited."""
    existing = {row.name: row.edited_at for row in conn.execute(select(pools))}
    kept = []
    for pool in configured:
        config = pool.model_dump_json()
        if pool.name not in existing:
            conn.execute(
                insert(pools).values(
                    name=pool.name, config=config, created_at=now, updated_at=now, edited_at=None
                )
            )
        elif existing[pool.name] is None:
            conn.execute(
                update(pools).where(pools.c.name == pool.name).values(config=config, updated_at=now)
            )
        else:
            kept.append(pool.name)
    return kept


def remove_pools_except(conn: Connection, names: list[str]) -> list[str]:
    """Deletes the pools (and their status) not named: the pools file's set is the fleet's."""
    gone = [name for name in conn.execute(select(pools.c.name)).scalars() if name not in set(names)]
    if gone:
        conn.execute(delete(pool_status).where(pool_status.c.pool.in_(gone)))
        conn.execute(delete(pools).where(pools.c.name.in_(gone)))
    return gone


def list_pools(conn: Connection) -> list[StoredPool]:
    rows = conn.execute(select(pools).order_by(pools.c.name))
    return [_stored(row) for row in rows]


def get_pool(conn: Connection, name: str) -> StoredPool | None:
    row = conn.execute(select(pools).where(pools.c.name == name)).first()
    return _stored(row) if row else None


def save_pool(conn: Connection, pool: Pool, now: float, *, edited: bool) -> bool:
    """Rewrites an existing pool's settings; False when there is no such pool."""
    return bool(
        conn.execute(
            update(pools)
            .where(pools.c.name == pool.name)
            .values(
                config=pool.model_dump_json(),
                updated_at=now,
                edited_at=now if edited else None,
            )
        ).rowcount
    )


def _stored(row: Any) -> StoredPool:
    return StoredPool(
        pool=Pool.model_validate_json(row.config),
        created_at=row.created_at,
        updated_at=row.updated_at,
        edited_at=row.edited_at,
    )


# --- status and decisions ------------------------------------------------------------------------


def statuses(conn: Connection) -> dict[str, PoolStatusRow]:
    result = {}
    for row in conn.execute(select(pool_status)).mappings():
        values = dict(row)
        values["history"] = tuple((float(t), int(n)) for t, n in json.loads(values["history"]))
        result[row["pool"]] = PoolStatusRow(**values)
    return result


def save_status(conn: Connection, status: PoolStatusRow) -> None:
    values = {**status.__dict__, "history": json.dumps([list(e) for e in status.history])}
    changed = conn.execute(
        update(pool_status).where(pool_status.c.pool == status.pool).values(**values)
    ).rowcount
    if not changed:
        conn.execute(insert(pool_status).values(**values))


def record_decision(conn: Connection, **values: Any) -> None:
    conn.execute(insert(scaling_decisions).values(**values))


def decisions(conn: Connection, pool: str | None, limit: int) -> list[DecisionRow]:
    query = select(scaling_decisions).order_by(scaling_decisions.c.id.desc()).limit(limit)
    if pool is not None:
        query = query.where(scaling_decisions.c.pool == pool)
    return [DecisionRow(**row) for row in conn.execute(query).mappings()]


def replaced_since(conn: Connection, node_id: str, since: float) -> bool:
    """Whether the node was handed to its provider for replacement at or after `since`."""
    row = conn.execute(
        select(scaling_decisions.c.id).where(
            scaling_decisions.c.node_id == node_id,
            scaling_decisions.c.action == "replace",
            scaling_decisions.c.error.is_(None),
            scaling_decisions.c.created_at >= since,
        )
    ).first()
    return row is not None


def prune_decisions(conn: Connection, keep: int) -> None:
    """Keeps the newest `keep` decisions (the log is for people, not an archive)."""
    cutoff = conn.execute(
        select(scaling_decisions.c.id).order_by(scaling_decisions.c.id.desc()).offset(keep)
    ).first()
    if cutoff is not None:
        conn.execute(delete(scaling_decisions).where(scaling_decisions.c.id <= cutoff.id))


# --- leader lease --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderRow:
    name: str
    holder: str
    expires_at: float
    acquired_at: float


def acquire_lease(conn: Connection, name: str, holder: str, now: float, ttl: float) -> bool:
    """Takes or renews the lease: one conditional UPDATE (held by us, or expired), else an
    INSERT that loses to a concurrent one on the primary key. True when `holder` holds it."""
    renewed = conn.execute(
        update(leader_leases)
        .where(
            leader_leases.c.name == name,
            (leader_leases.c.holder == holder) | (leader_leases.c.expires_at < now),
        )
        .values(
            holder=holder,
            expires_at=now + ttl,
            acquired_at=_acquired_at(conn, name, holder, now),
        )
    ).rowcount
    if renewed:
        return True
    if conn.execute(select(leader_leases.c.name).where(leader_leases.c.name == name)).first():
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                insert(leader_leases).values(
                    name=name, holder=holder, expires_at=now + ttl, acquired_at=now
                )
            )
    except IntegrityError:
        return False
    return True


def _acquired_at(conn: Connection, name: str, holder: str, now: float) -> Any:
    """Keeps the original acquisition time on a renewal, resets it on a takeover."""
    held = (
        select(leader_leases.c.acquired_at)
        .where(leader_leases.c.name == name, leader_leases.c.holder == holder)
        .scalar_subquery()
    )
    return func.coalesce(held, now)


def release_lease(conn: Connection, name: str, holder: str) -> None:
    conn.execute(
        delete(leader_leases).where(leader_leases.c.name == name, leader_leases.c.holder == holder)
    )


def leader(conn: Connection, name: str) -> LeaderRow | None:
    row = conn.execute(select(leader_leases).where(leader_leases.c.name == name)).first()
    return LeaderRow(**row._mapping) if row else None
