"""Node health: failure counts, quarantine, and the node event log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles

from imagefleet.protocol import AttemptOutcome, JobStatus
from imagefleet.store.tables import (
    RETRIED_QUEUED_WHERE,
    attempts,
    jobs,
    node_events,
    nodes,
    workers,
)
from imagefleet.store.workers import DRAIN_DEFAULT


@dataclass(frozen=True)
class NodeRow:
    id: str
    quarantined_at: float | None
    reason: str | None
    recent_failures: int
    last_seen_at: float | None


@dataclass(frozen=True)
class NodeEvent:
    id: int
    node_id: str
    kind: str
    reason: str
    created_at: float


def recent_failures(conn: Connection, node_id: str, since: float, excluded_codes: set[str]) -> int:
    """Failed attempts on the node since `since` that were the node's fault."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(
                attempts.c.node_id == node_id,
                attempts.c.outcome == AttemptOutcome.failed.value,
                attempts.c.ended_at >= since,
                attempts.c.error_code.not_in(excluded_codes),
            )
        ).scalar_one()
    )


def released_at(conn: Connection, node_id: str) -> float | None:
    """When the node's last quarantine was lifted (failures before it no longer count)."""
    row = conn.execute(
        select(nodes.c.updated_at).where(nodes.c.id == node_id, nodes.c.quarantined_at.is_(None))
    ).first()
    return row.updated_at if row else None


def quarantine_reason(conn: Connection, node_id: str) -> str | None:
    row = conn.execute(
        select(nodes.c.reason).where(nodes.c.id == node_id, nodes.c.quarantined_at.is_not(None))
    ).first()
    return row.reason if row else None


class ClaimBlocks(NamedTuple):
    """What a claim checks before it looks for work: the node's quarantine reason, why the
    autoscaler is draining it (None when it is not), whether any job is queued at all, and
    whether any queued job was tried before (what a claim finds then depends on its node and the
    time: such jobs are not offered again on a node they failed on, nor before their back-off
    ends; `orchestrator.empty_looks`)."""

    quarantined: str | None
    draining: str | None
    anything_queued: bool
    retried_queued: bool = False

    @property
    def unblocked(self) -> bool:
        """Neither quarantined nor draining."""
        return self.quarantined is None and self.draining is None

    @property
    def nothing_to_do(self) -> bool:
        """Neither blocked nor any job queued."""
        return self.unblocked and not self.anything_queued


class _RetriedQueued(ColumnElement[bool]):
    """Whether any queued job was tried before: one seek in the partial index
    `ix_jobs_queued_retried` (it holds only such jobs: usually none). Literal values, so that the
    query's WHERE matches the index's; on SQLite the index is also named (`INDEXED BY`): without
    statistics its planner preferred a full index on status, a scan of every queued job (232 ms
    at a million queued, docs/benchmarks.md)."""

    type = Boolean()
    # No state: the class alone is its cache key. Without this the element has none, and every
    # statement holding it (each claim's look) was compiled again on every execution.
    _traverse_internals = []  # noqa: RUF012 (SQLAlchemy reads it from the class)
    inherit_cache = True


@compiles(_RetriedQueued)
def _retried_queued(element: _RetriedQueued, compiler: Any, **kw: Any) -> str:
    return f"EXISTS (SELECT 1 FROM jobs WHERE {RETRIED_QUEUED_WHERE})"


@compiles(_RetriedQueued, "sqlite")
def _retried_queued_sqlite(element: _RetriedQueued, compiler: Any, **kw: Any) -> str:
    named = "jobs INDEXED BY ix_jobs_queued_retried"
    return f"EXISTS (SELECT 1 FROM {named} WHERE {RETRIED_QUEUED_WHERE})"


_QUARANTINED = (
    select(nodes.c.reason)
    .where(nodes.c.id == bindparam("node"), nodes.c.quarantined_at.is_not(None))
    .scalar_subquery()
)
_DRAINING = (
    select(func.coalesce(workers.c.drain_reason, DRAIN_DEFAULT))
    .where(workers.c.node_id == bindparam("node"), workers.c.drain_requested_at.is_not(None))
    .limit(1)
    .scalar_subquery()
)
_ANY_QUEUED = exists(select(jobs.c.id).where(jobs.c.status == JobStatus.queued.value))
# Built once (see store/jobs.py): every claim, idle long polls included, runs it; the claim's
# write transaction runs it beside its probes (`store.claim_probes`). Bound: `node`.
CLAIM_BLOCKS = select(
    _QUARANTINED.label("quarantined"),
    _DRAINING.label("draining"),
    _ANY_QUEUED.label("anything_queued"),
    _RetriedQueued().label("retried_queued"),
)


def claim_blocks(conn: Connection, node_id: str) -> ClaimBlocks:
    """The node's ClaimBlocks, in one statement (each queue check is one index seek)."""
    return to_blocks(conn.execute(CLAIM_BLOCKS, {"node": node_id}).one())


def to_blocks(row: Any) -> ClaimBlocks:
    """ClaimBlocks from a row with CLAIM_BLOCKS' columns."""
    return ClaimBlocks(
        row.quarantined, row.draining, bool(row.anything_queued), bool(row.retried_queued)
    )


def quarantine(conn: Connection, node_id: str, reason: str, now: float) -> bool:
    """Marks the node quarantined (and logs the event); False if it already was."""
    if quarantine_reason(conn, node_id) is not None:
        return False
    changed = conn.execute(
        update(nodes)
        .where(nodes.c.id == node_id)
        .values(quarantined_at=now, reason=reason, updated_at=now)
    ).rowcount
    if not changed:
        conn.execute(
            insert(nodes).values(id=node_id, quarantined_at=now, reason=reason, updated_at=now)
        )
    conn.execute(
        insert(node_events).values(
            node_id=node_id, kind="quarantined", reason=reason, created_at=now
        )
    )
    return True


def release(conn: Connection, node_id: str, reason: str, now: float) -> bool:
    """Lifts a quarantine (and logs the event); False if the node was not quarantined."""
    if "\x00" in node_id:  # cannot be a node id (claims refuse NUL): unknown
        return False
    changed = conn.execute(
        update(nodes)
        .where(nodes.c.id == node_id, nodes.c.quarantined_at.is_not(None))
        .values(quarantined_at=None, reason=None, updated_at=now)
    ).rowcount
    if changed:
        conn.execute(
            insert(node_events).values(
                node_id=node_id, kind="released", reason=reason, created_at=now
            )
        )
    return bool(changed)


def list_nodes(conn: Connection, since: float, excluded_codes: set[str]) -> list[NodeRow]:
    """Every node seen through a claim or a quarantine, with its failures in the window."""
    seen = dict(
        conn.execute(
            select(workers.c.node_id, func.max(workers.c.last_seen_at)).group_by(workers.c.node_id)
        ).all()
    )
    state = {row.id: row for row in conn.execute(select(nodes))}
    failures: dict[str, int] = dict(
        conn.execute(
            select(attempts.c.node_id, func.count())
            .where(
                attempts.c.outcome == AttemptOutcome.failed.value,
                attempts.c.ended_at >= since,
                attempts.c.error_code.not_in(excluded_codes),
            )
            .group_by(attempts.c.node_id)
        ).all()
    )
    result = []
    for node_id in sorted(set(seen) | set(state)):
        row = state.get(node_id)
        result.append(
            NodeRow(
                id=node_id,
                quarantined_at=row.quarantined_at if row else None,
                reason=row.reason if row else None,
                recent_failures=int(failures.get(node_id, 0)),
                last_seen_at=seen.get(node_id),
            )
        )
    return result


def events_after(conn: Connection, after_id: int, limit: int) -> list[NodeEvent]:
    rows = conn.execute(
        select(node_events)
        .where(node_events.c.id > after_id)
        .order_by(node_events.c.id)
        .limit(limit)
    ).mappings()
    return [NodeEvent(**row) for row in rows]
