"""A replica's cache of which registered checkpoints a sha256 names, for the claims' checkpoint
probes: a warm worker reports the checkpoints on its GPU and disk with every claim, and turning
them into model ids was a read of its own per claim (docs/architecture.md, "What a lifecycle
costs the database").

The ids only steer which queued jobs a claim looks at besides the queue head (the jobs needing a
checkpoint the worker holds), never what it may take, so an answer up to
`CHECKPOINT_IDS_SECONDS` old is safe: a checkpoint registered meanwhile under a sha256 a worker
already reported is probed for once the entry ages out, and its jobs are still seen at the queue
head before that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from imagefleet.store import claim_candidates as claim_sql

CHECKPOINT_IDS_SECONDS = 10.0
# Distinct sha256s remembered; past this all are forgotten (the next claims read them again).
MAX_SHAS = 100_000


class CachedCheckpointIds:
    """`claim_candidates.checkpoint_ids`, each sha256's answer kept for `fresh_seconds` (by this
    process's monotonic clock): a claim reads only the sha256s not seen lately."""

    def __init__(
        self,
        fresh_seconds: float = CHECKPOINT_IDS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, tuple[int, ...]]] = {}

    def __call__(self, conn: Connection, shas: Sequence[str], count: int) -> list[int]:
        if not shas or not count:
            return []
        now = self.clock()
        with self._lock:
            fresh = {
                sha: found[1]
                for sha in shas
                if (found := self._known.get(sha)) and now - found[0] < self.fresh_seconds
            }
        missing = [sha for sha in shas if sha not in fresh]
        if missing:
            read = claim_sql.checkpoints_by_sha(conn, missing)
            with self._lock:
                if len(self._known) + len(read) > MAX_SHAS:
                    self._known.clear()
                self._known.update((sha, (now, ids)) for sha, ids in read.items())
            fresh.update(read)
        return claim_sql.first_checkpoints(shas, fresh, count)
