"""The explainable queue: why a queued job waits and where it stands, the warning a job no worker
could run gets at submit (not when an autoscaler pool could start a worker for it), and
`fail_unservable`, which fails such a job after
`IMAGEFLEET_UNSERVABLE_AFTER_SECONDS` with that reason instead of leaving it queued forever.

The words come from the pure `scheduling.waiting`; this module gathers its inputs: the workers'
last reports (`worker_state`, bounded by the fleet), the busy workers, and bounded counts of the
jobs ahead.
"""

from __future__ import annotations

from sqlalchemy import Connection

from imagefleet.api_views import QueueView
from imagefleet.orchestrator.transitions import TransitionBase
from imagefleet.protocol import JobStatus, ModelRole
from imagefleet.scheduling.waiting import JobNeeds, Place, SeenWorker, unservable, why_waiting
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import pools as pool_sql
from imagefleet.store import queue_position as position_sql
from imagefleet.store import worker_state as state_sql

# Counting the jobs ahead stops here ("behind 10000+ jobs"): a bounded index scan.
AHEAD_CAP = 10_000
UNSERVABLE_BATCH = 200


class QueueTransitions(TransitionBase):
    def queue_view(
        self,
        row: job_sql.JobRow,
        combo: list[job_model_sql.JobModel] | None = None,
        workers: list[SeenWorker] | None = None,
        ahead: tuple[int, int] | None = None,
    ) -> QueueView | None:
        """Why a queued job waits and where it stands; None for a job that is not queued.
        `combo`, `workers` and `ahead` (the job's models, the workers seen, the jobs ahead of
        it), when the caller has just read them, are not read again (`why_waiting` counts only
        the live workers): a submit's answer reads nothing."""
        if row.status is not JobStatus.queued:
            return None
        now = self.clock()
        if combo is None or workers is None or ahead is None:
            with self.db.read() as conn:
                needs = self._needs(conn, row, combo)
                if workers is None:
                    workers = self._seen(conn, now)
                count, own = ahead or position_sql.ahead(conn, row, AHEAD_CAP)
        else:
            needs = self._needs(None, row, combo)
            count, own = ahead
        place = Place(
            ahead=count,
            ahead_own=own,
            capped=count >= AHEAD_CAP,
            retry_in_s=max(0.0, (row.run_after or 0.0) - now),
        )
        return QueueView(
            reason=row.warning or why_waiting(needs, workers, place),
            ahead=count,
            ahead_own=own,
            ahead_capped=place.capped,
        )

    def warn_if_unservable(
        self, conn: Connection, row: job_sql.JobRow, combo: list[job_model_sql.JobModel]
    ) -> tuple[job_sql.JobRow, list[SeenWorker]]:
        """At submit: flags the job when no worker seen recently could ever run it (inside the
        submit's transaction, with the combo it just resolved); returns the row as stored and
        the workers seen (for the answer's `queue_view`). The workers come from the replica's
        snapshot (`orchestrator.seen_workers`), read afresh before a warning."""
        now = self.clock()
        workers, snapshot = self.seen_workers.read(
            now, lambda: self._seen(conn, now, live_only=False)
        )
        needs = self._needs(conn, row, combo)
        reason = unservable(needs, workers, self._window)
        if reason is not None and snapshot:  # a warning is never the snapshot's age
            workers = self._seen(conn, now, live_only=False)
            reason = unservable(needs, workers, self._window)
        if reason is None or self._pool_could_serve(conn, needs):
            return row, workers
        position_sql.warn(conn, row.id, reason, now)
        stored = job_sql.get_job(conn, row.id)
        assert stored is not None
        return stored, workers

    def fail_unservable(self) -> int:
        """Fails flagged jobs whose time ran out, if still no worker seen could run them; clears
        the flag of those a worker that joined meanwhile can run. Run by the reaper."""
        after = self.settings.unservable_after_seconds
        if not after:
            return 0
        now = self.clock()
        failed = 0
        with self.db.write() as conn:
            workers = self._seen(conn, now, live_only=False)
            for row in position_sql.lock_warned(conn, now - after, UNSERVABLE_BATCH):
                needs = self._needs(conn, row)
                reason = unservable(needs, workers, self._window)
                if reason is None or self._pool_could_serve(conn, needs):
                    position_sql.clear_warning(conn, row.id)
                elif position_sql.fail_unservable(conn, row.id, reason, now):
                    self._emit_final(conn, row, "failed", now)
                    failed += 1
        return failed

    @staticmethod
    def _pool_could_serve(conn: Connection, needs: JobNeeds) -> bool:
        """Whether an autoscaler pool could start a worker for the job (its GPU, VRAM, kinds,
        size and models, as the pools table describes them): no worker seen can run it, but
        one is a scale-up away, so the job is not unservable. Read only for a job no seen
        worker could run, so a submit pays nothing for it otherwise."""
        return any(
            stored.pool.max > 0
            and stored.pool.serves(
                needs.kind, needs.pixels, needs.required_vram_mb, needs.checkpoint_name
            )
            for stored in pool_sql.list_pools(conn)
        )

    @property
    def _window(self) -> float:
        return self.settings.worker_seen_seconds

    def _needs(
        self,
        conn: Connection | None,
        row: job_sql.JobRow,
        combo: list[job_model_sql.JobModel] | None = None,
    ) -> JobNeeds:
        """What the job needs of a worker; its combo is read unless given (`conn` may then be
        None)."""
        if combo is None:
            assert conn is not None, "a job's needs without its combo need a connection"
            combo = job_model_sql.combos(conn, [row.id])[row.id]
        checkpoint = next((item for item in combo if item.role is ModelRole.checkpoint), None)
        return JobNeeds(
            kind=row.kind,
            pixels=row.pixels,
            required_vram_mb=row.required_vram_mb,
            checkpoint_sha256=checkpoint.model.sha256 if checkpoint else None,
            checkpoint_name=checkpoint.model.name if checkpoint else None,
        )

    def _seen(self, conn: Connection, now: float, *, live_only: bool = True) -> list[SeenWorker]:
        live_since = now - 3 * self.settings.lease_seconds
        since = live_since if live_only else now - self._window
        return [
            SeenWorker(
                worker_id=state.worker_id,
                kinds=state.kinds,
                max_pixels=state.max_pixels,
                vram_mb=state.vram_mb,
                resident_models=state.resident_models,
                cached_models=state.cached_models,
                # A worker running a long job does not claim meanwhile, yet it is there.
                live=state.updated_at >= live_since or busy,
                busy=busy,
            )
            for state, busy in state_sql.seen_and_busy(conn, since)
        ]
