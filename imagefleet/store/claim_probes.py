"""A claim's look at the queue, in one statement: the node's blocks (quarantined, draining,
anything queued at all, any retried job queued: `store.nodes.ClaimBlocks`) beside the ids of
every job the probes found (`store.claim_candidates` says what each probe looks for).

The claim's write transaction needs both before it locks anything, and the two used to be two
round trips; now the blocks are one row left-joined to the probes' union, so a look that finds
nothing is still one row. The probes cost nothing when nothing is queued (each is a bounded
index range scan), so running them beside a block that then refuses the claim wastes nothing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Executable,
    bindparam,
    literal,
    select,
    true,
    union_all,
)

from imagefleet.scheduling.decisions import Selection
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store.claim_candidates import Probes, WorkerLimits
from imagefleet.store.nodes import CLAIM_BLOCKS, ClaimBlocks, claim_blocks, to_blocks
from imagefleet.store.tables import jobs

# The registered checkpoints among the first `count` sha256s that name one
# (`claim_candidates.checkpoint_ids`): (conn, sha256s, count) -> model ids.
CheckpointIds = Callable[[Connection, Sequence[str], int], list[int]]
# Priority levels probed (the configured tiers' priorities; few: free and paid by default).
MAX_PRIORITY_LEVELS = 4

# A probe's shape: what it matches (`_PROBED`: the column, bound as `v<n>`, and the order) and
# its limit.
ProbeShape = tuple[str, int]
_PROBED = {
    "priority": (jobs.c.priority, (jobs.c.created_at,)),
    "owner": (jobs.c.owner_key_id, (jobs.c.priority.desc(), jobs.c.created_at)),
    "combo": (jobs.c.combo_key, (jobs.c.created_at,)),
    "checkpoint": (jobs.c.model_id, (jobs.c.created_at,)),
}


@functools.lru_cache(maxsize=512)
def _probe_union(
    shapes: tuple[ProbeShape, ...], vram: bool, past_locked: bool = False
) -> CompoundSelect:
    """Every probe as one `UNION ALL` of bounded index range scans, built once per shape (the
    number of probes of each kind and their limits): building it cost more than running it.
    `past_locked`: each probe locks what it finds and skips rows other claims hold (SKIP
    LOCKED, PostgreSQL; SQLite has no row locks and renders none)."""
    limits = claim_sql.bound_limits(vram)
    parts = []
    for n, (probed, limit) in enumerate(shapes):
        column, order = _PROBED[probed]
        branch = select(jobs.c.id, literal(n).label("probe"))
        branch = branch.where(*limits, column == bindparam(f"v{n}"))
        branch = branch.order_by(*order).limit(limit)
        if past_locked:
            branch = branch.with_for_update(skip_locked=True)
        parts.append(branch.subquery())
    return union_all(*[select(part.c.id, part.c.probe) for part in parts])


@functools.lru_cache(maxsize=512)
def _blocks_and_probes(
    shapes: tuple[ProbeShape, ...], vram: bool, past_locked: bool = False
) -> Executable:
    """The node's blocks, one row, left-joined to the probes' ids: one row per id found, or one
    with a NULL id when none was; built once per shape."""
    blocks = CLAIM_BLOCKS.subquery("blocks")
    found = _probe_union(shapes, vram, past_locked).subquery("found")
    return select(blocks, found.c.id, found.c.probe).select_from(blocks.outerjoin(found, true()))


def _full(shapes: list[ProbeShape], rows: Sequence[Any]) -> bool:
    """Whether more jobs than the look found may be queued: a head probe (every queued job is
    in the head of its priority) found as many as its limit. The other probes look at subsets
    of the heads' queue, and an owner's probe (limit 1) is full whenever the owner has a job."""
    found = Counter(row.probe for row in rows if row.id is not None)
    heads = [(n, limit) for n, (probed, limit) in enumerate(shapes) if probed == "priority"]
    candidates = heads or [(n, limit) for n, (_, limit) in enumerate(shapes)]
    return any(found[n] >= limit for n, limit in candidates)


@dataclass(frozen=True)
class Look:
    """What one look saw: the node's blocks and the ids the probes matched (before locking),
    with what reading those jobs' rows needs (`claim_candidates.lock_candidates`). `full`: a
    probe found as many jobs as its limit, so more may be queued past them (a look past the
    locked ones can find some); with none full, every job the probes could find is here."""

    blocks: ClaimBlocks
    ids: list[str]
    values: dict[str, Any]
    vram: bool
    full: bool = False


def look(
    conn: Connection,
    worker: WorkerLimits,
    selection: Selection,
    probes: Probes,
    now: float,
    priorities: Sequence[int] = (0,),
    owners: Sequence[str] | None = None,
    checkpoints: CheckpointIds = claim_sql.checkpoint_ids,
    past_locked: bool = False,
) -> Look:
    """The selection's probes for this worker and its node's blocks: one statement, after the
    owners to look at (one skip scan, unless given) and the worker's checkpoints by sha256 (when
    it reports any: `checkpoints`, which a replica answers from its cache). `past_locked`: the
    look of a claim whose first look matched only jobs other claims held; its probes lock
    what they find and read past those (`_probe_union`)."""
    shapes: list[ProbeShape] = []
    values: dict[str, Any] = {
        "node": worker.node_id,
        "kinds": list(worker.kinds),
        "max_pixels": worker.max_pixels,
        "now": now,
    }
    if worker.vram_mb:
        values["vram"] = worker.vram_mb

    def probe(probed: str, value: Any, limit: int) -> None:
        if limit:
            values[f"v{len(shapes)}"] = value
            shapes.append((probed, limit))

    head = max(selection.oldest_per_tier, selection.fair_head_per_tier)
    for priority in sorted(set(priorities), reverse=True)[:MAX_PRIORITY_LEVELS]:
        probe("priority", priority, head)
    if selection.fair_head_per_tier:
        if owners is None:
            owners = claim_sql.queued_owners(conn, 2 * selection.fair_head_per_tier)
        for owner in owners:
            probe("owner", owner, 1)
    for combo in probes.resident_combos[:4]:
        probe("combo", combo, selection.per_resident_combo)
    resident = list(probes.resident_models[: selection.resident_checkpoints_probed])
    cached = [sha for sha in probes.cached_models if sha not in set(resident)]
    for shas, each, probed in (
        (resident, selection.per_resident_checkpoint, selection.resident_checkpoints_probed),
        (cached, selection.per_cached_checkpoint, selection.cached_checkpoints_probed),
    ):
        if each:
            for model_id in checkpoints(conn, shas, probed):
                probe("checkpoint", model_id, each)
    vram = bool(worker.vram_mb)
    if not shapes:
        return Look(claim_blocks(conn, worker.node_id), [], values, vram)
    rows = conn.execute(_blocks_and_probes(tuple(shapes), vram, past_locked), values).all()
    ids = sorted({row.id for row in rows if row.id is not None})
    return Look(to_blocks(rows[0]), ids, values, vram, _full(shapes, rows))
