"""What every transition shares: the database, settings, clock, and the ownership checks.

Client transitions (client_transitions.py) and worker transitions (worker_transitions.py) are
mixed into `JobLifecycle` (lifecycle.py). Each public method is one named state change and one
database transaction, a compare-and-set in the sense of docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection

from imagefleet.artifacts.base import ArtifactStore
from imagefleet.artifacts.factory import artifact_store_for
from imagefleet.config import Settings
from imagefleet.errors import NotFound, StaleAttempt
from imagefleet.orchestrator import events, webhooks
from imagefleet.orchestrator.node_health import NodeHealth
from imagefleet.orchestrator.seen_workers import SeenSnapshot
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class TransitionBase:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.artifacts = artifacts if artifacts is not None else artifact_store_for(settings)
        self.health = NodeHealth(db, settings)
        self.seen_workers = SeenSnapshot()  # for the submits (`orchestrator.seen_workers`)

    def _owned(self, conn: Connection, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        row = job_sql.get_job(conn, job_id)
        if row is None or row.owner_key_id != owner.id:
            raise NotFound(f"no job {job_id!r}")
        return row

    def _readable(self, conn: Connection, key: ApiKey, job_id: str) -> job_sql.JobRow:
        """The job, for reading: its owner's, or any tenant's for an admin key (so an operator
        can open a job from the fleet overview). Changing a job (cancel) stays `_owned`."""
        if key.scope != "admin":
            return self._owned(conn, key, job_id)
        row = job_sql.get_job(conn, job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return row

    def _lock_owned(self, conn: Connection, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        row = job_sql.lock_job(conn, job_id)
        if row is None or row.owner_key_id != owner.id:
            raise NotFound(f"no job {job_id!r}")
        return row

    @staticmethod
    def _attempt(conn: Connection, attempt_id: str, worker_key: ApiKey) -> attempt_sql.AttemptRow:
        """The attempt, if this worker key claimed it: one worker cannot act on another's.
        Reading it takes no lock: an attempt's job and key never change."""
        attempt = attempt_sql.get_attempt(conn, attempt_id)
        if attempt is None or attempt.worker_key_id != worker_key.id:
            raise NotFound(f"no attempt {attempt_id!r} for this worker key")
        return attempt

    @staticmethod
    def _attempt_job(
        conn: Connection, worker_key: ApiKey, attempt_id: str, *, lock: bool = True
    ) -> job_sql.JobRow:
        """The attempt's job (locked unless `lock` is False), if this worker key claimed the
        attempt, in one statement; NotFound otherwise. The caller checks that the attempt still
        owns the job."""
        row = job_sql.attempt_job(conn, attempt_id, worker_key.id, lock=lock)
        if row is None:
            raise NotFound(f"no attempt {attempt_id!r} for this worker key")
        return row

    def _lock_current(
        self, conn: Connection, worker_key: ApiKey, attempt_id: str, doing: str
    ) -> tuple[attempt_sql.AttemptRow, job_sql.JobRow]:
        """The attempt and its job, the job row locked, if the attempt still owns the job;
        StaleAttempt (409, nothing written) otherwise."""
        attempt = self._attempt(conn, attempt_id, worker_key)
        row = job_sql.lock_job(conn, attempt.job_id)
        assert row is not None  # attempts are deleted only with their job
        if row.current_attempt_id != attempt_id:
            raise StaleAttempt(stale_reason(attempt_id, row, doing))
        return attempt, row

    def _file_store(self) -> ArtifactStore:
        return self.artifacts

    @staticmethod
    def _emit_final(conn: Connection, locked: job_sql.JobRow, event: str, now: float) -> None:
        """Records the final event for a job that just reached a final state, and queues its
        webhook event. `locked` is the row as the transition locked it (its webhook settings
        never change). The job is read again to tell its final status and error (a success
        without a webhook records its event in the completing statement instead:
        `store.folded.succeed`)."""
        final = job_sql.get_job(conn, locked.id)
        if final is not None:
            events.final(conn, final, now)
        if final is not None and locked.webhook_url:
            webhooks.emit(conn, final, event, now)


def stale_reason(attempt_id: str, row: job_sql.JobRow, doing: str) -> str:
    """Why an attempt may no longer act on its job, in words a worker log can show."""
    if row.status.is_final:
        return f"attempt {attempt_id} cannot {doing} job {row.id}: the job is {row.status.value}"
    return f"attempt {attempt_id} cannot {doing} job {row.id}: it lost its lease"
