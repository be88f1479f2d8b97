"""Retention: finished jobs and their files expire after a configurable time.

Work is done in bounded batches so a large backlog never holds a long transaction or a big
delete. Files are deleted before rows: if a batch fails half-way, the rows remain and the next
pass deletes their (already gone) files again, which is harmless; the reverse order could leave
files that nothing points to. Every replica may run this at once: on PostgreSQL batches are
taken with SKIP LOCKED, and deleting the same thing twice is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from imagefleet.artifacts.base import ArtifactStore
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import Database

log = logging.getLogger("imagefleet.retention")


def purge_expired(
    db: Database,
    store: ArtifactStore,
    *,
    older_than_seconds: float,
    now: float,
    batch_size: int = 500,
    max_batches: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Deletes final jobs finished more than `older_than_seconds` ago; returns how many."""
    cutoff = now - older_than_seconds
    purged = 0
    batches = 0
    while not should_stop() and (max_batches is None or batches < max_batches):
        with db.write() as conn:
            job_ids = job_sql.expired_jobs(conn, cutoff, batch_size)
            store.delete_many(artifact_sql.artifact_keys(conn, job_ids))
            purged += job_sql.delete_jobs(conn, job_ids)
        batches += 1
        if len(job_ids) < batch_size:
            break
    if purged:
        log.info("retention: deleted %d jobs finished before %.0f", purged, cutoff)
    return purged
