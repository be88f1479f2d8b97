"""Micro-batch mates: queued jobs that may be claimed with one already taken.

A claim that asks for several jobs takes its first one as every claim does (ranked by the
policy); the others are the oldest queued jobs of the same kind and combo that the worker may
run (the claim's hard limits, in the SQL) and whose params give the same batch key (checked by
the caller: the key is the kind's to define, kinds/batching.py). The probe reads
`ix_jobs_queued_combo` and, on PostgreSQL, locks its rows with SKIP LOCKED, so concurrent
claimers never wait on each other; each mate is then taken by the same compare-and-set as the
first job (`jobs.claim_job`), so no job ever gets two attempts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from imagefleet.store.claim_candidates import WorkerLimits, hard_limits
from imagefleet.store.tables import jobs


@dataclass(frozen=True)
class Mate:
    id: str
    params: dict[str, Any]
    owner_key_id: str


def queued_mates(
    conn: Connection,
    worker: WorkerLimits,
    *,
    kind: str,
    combo_key: str,
    exclude: str,
    now: float,
    limit: int,
) -> list[Mate]:
    """Up to `limit` queued jobs of this kind and combo the worker may run, oldest first
    (`exclude`: the job already claimed), locked (SKIP LOCKED) on PostgreSQL."""
    if limit <= 0:
        return []
    rows = conn.execute(
        select(jobs.c.id, jobs.c.params, jobs.c.owner_key_id)
        .where(
            *hard_limits(worker, now),
            jobs.c.combo_key == combo_key,
            jobs.c.kind == kind,
            jobs.c.id != exclude,
        )
        .order_by(jobs.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=jobs)
    ).all()
    return [
        Mate(
            r.id,
            json.loads(r.params) if isinstance(r.params, str) else dict(r.params),
            r.owner_key_id,
        )
        for r in rows
    ]
