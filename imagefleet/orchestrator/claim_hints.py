"""What a replica remembers of the attempts it handed out, so that their completion can skip the
ownership read (`WorkerClaims.claimed_here`): a hint, never proof."""

from __future__ import annotations

import threading

from imagefleet.store import jobs as job_sql

# Attempts whose claim a replica remembers for their completion (`claimed_here`), newest.
CLAIMED_REMEMBERED = 10_000


class ClaimHints:
    """attempt id -> (worker key id, its job as claimed), for the newest CLAIMED_REMEMBERED
    attempts this replica handed out; shared by the request threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hints: dict[str, tuple[str, job_sql.JobRow]] = {}

    def remember(self, attempt_id: str, key_id: str, row: job_sql.JobRow) -> None:
        with self._lock:
            if len(self._hints) >= CLAIMED_REMEMBERED:
                del self._hints[next(iter(self._hints))]  # the oldest
            self._hints[attempt_id] = (key_id, row)

    def take(self, attempt_id: str, key_id: str) -> job_sql.JobRow | None:
        """The job, once, if `key_id` claimed the attempt here."""
        with self._lock:
            found = self._hints.pop(attempt_id, None)
        return found[1] if found is not None and found[0] == key_id else None

    def forget(self, attempt_id: str) -> None:
        with self._lock:
            self._hints.pop(attempt_id, None)
