"""Worker transitions after the claim (worker_claims.py): heartbeat, complete, fail, and
the lease reaper.

Every one of them that changes an existing job locks the job row first (`_lock_current`) and
decides under that lock, or is one conditional UPDATE whose row count it checks; a call that
loses a race raises StaleAttempt (409) having written nothing: no accepted artifacts, no
webhook, no node-health count. The lock order is always job, then attempt, then artifacts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from imagefleet.errors import InvalidField, NotFound, StaleAttempt
from imagefleet.orchestrator import events
from imagefleet.orchestrator.checkpoint_transitions import StagedModel
from imagefleet.orchestrator.following_claims import FollowingClaim, FollowingClaims
from imagefleet.orchestrator.retry import Failure, JobHistory, RetryPolicy, decide_retry
from imagefleet.orchestrator.transitions import stale_reason, to_datetime
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.orchestrator.worker_files import StoredFile
from imagefleet.protocol import AttemptOutcome, FailureCode, JobStatus
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import checkpoints as checkpoint_sql
from imagefleet.store import folded as folded_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import (
    AttemptResult,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
)

LEASE_EXPIRED_MESSAGE = "the worker stopped sending heartbeats and its lease expired"


class WorkerTransitions(FollowingClaims):
    # --- running -------------------------------------------------------------------------------

    @retry_conflicts
    def heartbeat(
        self, worker_key: ApiKey, attempt_id: str, request: HeartbeatRequest
    ) -> HeartbeatResponse:
        """Renews the lease and records progress: the attempt's facts, one conditional UPDATE
        and an event when the step moved (one statement on PostgreSQL: `store.folded.beat`).
        A job cancelled by its client answers `cancel`; an attempt that lost its lease gets
        409."""
        now = self.clock()
        expires = now + self.settings.lease_seconds
        with self.db.write() as conn:
            beat = folded_sql.beat(
                conn,
                attempt_id,
                worker_key.id,
                step=request.step,
                total=request.total_steps,
                lease_expires_at=expires,
                now=now,
            )
            if beat is None:
                raise NotFound(f"no attempt {attempt_id!r} for this worker key")
            if beat.renewed:
                if request.loss is not None:
                    checkpoint_sql.record_point(
                        conn,
                        job_id=beat.facts.job_id,
                        attempt_id=attempt_id,
                        step=request.step,
                        loss=request.loss,
                        learning_rate=request.learning_rate or 0.0,
                        now=now,
                    )
                return HeartbeatResponse(
                    action="continue",
                    lease_expires_at=to_datetime(expires),
                    drain=beat.facts.drain_reason,
                )
            ended = attempt_sql.get_attempt(conn, attempt_id)
            if ended is not None and ended.outcome is AttemptOutcome.cancelled:
                return HeartbeatResponse(action="cancel", reason="the client cancelled the job")
        raise StaleAttempt(
            f"attempt {attempt_id} no longer holds the lease on job {beat.facts.job_id}"
        )

    # --- ending --------------------------------------------------------------------------------

    def complete(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        signal: WorkSignal | None = None,
    ) -> AttemptResult:
        """running -> succeeded. Idempotent for the winning attempt (a repeated complete gets
        the same answer); 409 for any other, and for a job cancelled or failed meanwhile.
        Files the worker put straight into the store are checked there first (present, within
        the size limit), outside the transaction, then recorded inside it. A request with
        `next` also claims the worker's next job in the same transaction (`claim_within`;
        `signal`: the replica's parked claims and empty looks, which that claim heeds)."""
        direct = self._direct_uploads(worker_key, attempt_id, request)
        return self._complete_stored(worker_key, attempt_id, request, direct, signal=signal)

    def _complete_stored(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        stored: list[StoredFile],
        job: job_sql.JobRow | None = None,
        signal: WorkSignal | None = None,
    ) -> AttemptResult:
        """Completes with the files already in the store (`stored`), staging a trained model
        first and deleting the checkpoints the completion made obsolete after it. `job` is the
        attempt's job when the caller has just read it. The answer carries the `next` claim's
        when the completion made it (not for a repeat of one that had succeeded)."""
        self._claimed.forget(attempt_id)  # completed one way or another: no hint any more
        staged = self._stage_result(worker_key, attempt_id, job)
        following = None
        if request.next is not None:
            following = FollowingClaim(worker_key, request.next, signal)
        result, doomed = self._complete(
            worker_key, attempt_id, request, stored, staged, job, following
        )
        self._delete_files(doomed)
        if following is not None and following.made:
            result.next = self.following_committed(following)
        return result

    @retry_conflicts
    def _complete(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        direct: list[StoredFile],
        staged: StagedModel | None,
        known: job_sql.JobRow | None = None,
        following: FollowingClaim | None = None,
    ) -> tuple[AttemptResult, list[str]]:
        """The transaction of `complete`; also returns the checkpoint files to delete. It ends
        with `following`'s claim once the completion is written (`claim_within`).

        `known`: the attempt's job as its claim on this replica, or a read just now, found it
        (running, held by this attempt). When the request carried every output, nothing is
        read first: the completing statement's compare-and-set is the ownership check, and only
        a completion it refuses reads the job, for its answer (a repeat of a completion that
        succeeded, or a 409). Otherwise the job is locked and checked first."""
        now = self.clock()
        if following is not None:
            following.made = False  # a conflict's retry starts over
        with self.db.write() as conn:
            if known is not None and self._all_sent(known, request, direct):
                row = known
            else:
                row = self._attempt_job(conn, worker_key, attempt_id)
                if row.status is JobStatus.succeeded and row.result_attempt_id == attempt_id:
                    return AttemptResult(job_id=row.id, job_status=row.status), []
                if row.current_attempt_id != attempt_id:
                    raise StaleAttempt(stale_reason(attempt_id, row, "complete"))
            files = self._accept_outputs(conn, row, attempt_id, request, direct)
            # A success without a webhook records its event in the completing statement; a
            # webhook's delivery reads the job as it ended (`_emit_final`).
            event = None if row.webhook_url else events.succeeded_data()
            if not folded_sql.succeed(
                conn,
                row,
                attempt_id,
                files=files,
                stage_timings=request.timings.model_dump(),
                event=event,
                now=now,
            ):
                if row is known:  # refused without a read: why, from the job as it is now
                    row = self._attempt_job(conn, worker_key, attempt_id)
                    if row.status is JobStatus.succeeded and row.result_attempt_id == attempt_id:
                        return AttemptResult(job_id=row.id, job_status=row.status), []
                raise StaleAttempt(stale_reason(attempt_id, row, "complete"))
            doomed = self._finish_training(conn, row, staged, now)
            if event is None:
                self._emit_final(conn, row, "succeeded", now)
            if following is not None:
                self.claim_within(conn, following, now)
        return AttemptResult(job_id=row.id, job_status=JobStatus.succeeded), doomed

    def _all_sent(
        self, row: job_sql.JobRow, request: CompleteRequest, direct: list[StoredFile]
    ) -> bool:
        """Whether the completion itself carries every output of the job, each stored
        (`_accept_outputs` then writes them with the completing statement, nothing before it)."""
        expected = list(range(self._output_spec(row).count))
        return (
            sorted(output.index for output in request.outputs) == expected
            and sorted(upload.index for upload in direct) == expected
        )

    def _accept_outputs(
        self,
        conn: Connection,
        row: job_sql.JobRow,
        attempt_id: str,
        request: CompleteRequest,
        direct: list[StoredFile],
    ) -> list[dict[str, Any]]:
        """Records the files sent with the completion and accepts every output the request
        lists, or raises InvalidField when they are not exactly the job's outputs, each stored.

        When the request itself carried every output (complete-inline, the common case), it
        returns their rows, for the completing statement to write accepted with their metadata
        (`store.folded.succeed`): nothing stored earlier has to be read or updated. Otherwise
        earlier uploads are checked and accepted one by one here, and it returns []."""
        spec = self._output_spec(row)
        expected = list(range(spec.count))
        indexes = sorted(output.index for output in request.outputs)
        meta = {
            o.index: {"seed": o.seed, "width": o.width, "height": o.height} for o in request.outputs
        }
        if self._all_sent(row, request, direct):
            files = [
                self._artifact_values(row.id, attempt_id, upload, spec.media_types[0])
                | meta[upload.index]
                for upload in direct
            ]
            return files
        for upload in direct:
            self._record(conn, row.id, attempt_id, upload, spec.media_types[0])
        uploaded = {a.idx for a in artifact_sql.attempt_artifacts(conn, attempt_id)}
        if indexes != expected or not set(indexes) <= uploaded:
            raise InvalidField(
                ("body", "outputs"),
                f"expected outputs 0..{spec.count - 1}, each uploaded first; got {indexes}, "
                f"uploaded {sorted(uploaded)}",
            )
        artifact_sql.accept_artifacts(conn, attempt_id, meta)
        return []

    @retry_conflicts
    def fail(self, worker_key: ApiKey, attempt_id: str, request: FailRequest) -> AttemptResult:
        """Ends the attempt as failed (or handed back, for `worker_shutdown`) and requeues the
        job or fails it for good, as `decide_retry` says."""
        now = self.clock()
        failure = Failure(FailureCode(request.code.value), request.message, request.retryable)
        with self.db.write() as conn:
            attempt, row = self._lock_current(conn, worker_key, attempt_id, "fail")
            handed_back = failure.code is FailureCode.worker_shutdown
            attempt_sql.end_attempt(
                conn,
                attempt_id,
                outcome=AttemptOutcome.handed_back if handed_back else AttemptOutcome.failed,
                now=now,
                error_code=failure.code.value,
                error_message=failure.message,
            )
            if not handed_back:
                self.health.after_failure(conn, attempt.node_id, failure.code, now)
            vram = (
                worker_sql.vram_mb(conn, attempt.worker_id)
                if failure.code is FailureCode.out_of_memory
                else None
            )
            status = self._retry_or_fail(conn, row, attempt_id, failure, now, vram)
        return AttemptResult(job_id=row.id, job_status=status)

    def grace_leases(self) -> int:
        """Extends every running lease to at least one lease from now (at start-up: an
        orchestrator restart must not cost the jobs of workers that kept working)."""
        with self.db.write() as conn:
            return job_sql.extend_leases(conn, self.clock() + self.settings.lease_seconds)

    @retry_conflicts
    def reap_expired(self, limit: int = 500) -> int:
        """Requeues (or fails) running jobs whose lease expired. Safe to run on every replica
        at once: the expired jobs are locked with SKIP LOCKED by a statement that itself checks
        the expiry, so a job a heartbeat has just renewed (or is renewing) is never taken."""
        now = self.clock()
        reaped = 0
        with self.db.write() as conn:
            for row in job_sql.lock_expired(conn, now, limit):
                attempt_id = row.current_attempt_id
                assert attempt_id is not None
                attempt_sql.end_attempt(
                    conn,
                    attempt_id,
                    outcome=AttemptOutcome.lease_expired,
                    now=now,
                    error_code=FailureCode.lease_expired.value,
                    error_message=LEASE_EXPIRED_MESSAGE,
                )
                failure = Failure(FailureCode.lease_expired, LEASE_EXPIRED_MESSAGE)
                self._retry_or_fail(conn, row, attempt_id, failure, now, None, expired=True)
                reaped += 1
        return reaped

    # --- helpers -------------------------------------------------------------------------------

    def _retry_or_fail(
        self,
        conn: Connection,
        row: job_sql.JobRow,
        attempt_id: str,
        failure: Failure,
        now: float,
        worker_vram_mb: int | None,
        *,
        expired: bool = False,
    ) -> JobStatus:
        """Applies `decide_retry` to the locked job. The writes keep their conditions (owner,
        and for the reaper the expiry), and a write that matches nothing aborts the
        transition."""
        history = JobHistory(
            failures=attempt_sql.count_failures(conn, row.id),
            failed_nodes=attempt_sql.failed_nodes(conn, [row.id]).get(row.id, frozenset()),
            live_nodes=self._live_nodes(conn, now),
            allow_same_node=row.allow_same_node,
            worker_vram_mb=worker_vram_mb,
        )
        decision = decide_retry(failure, history, self._retry_policy(row), now)
        expired_before = now if expired else None
        if decision.retry:
            written = job_sql.requeue_job(
                conn,
                attempt_id,
                error_code=failure.code.value,
                error_message=decision.message,
                run_after=decision.run_after,
                min_vram_mb=decision.min_vram_mb,
                allow_same_node=decision.allow_same_node,
                same_node_after=decision.same_node_after,
                expired_before=expired_before,
            )
            status = JobStatus.queued
            if written:
                requeued = job_sql.get_job(conn, row.id)
                assert requeued is not None
                events.queued(conn, requeued, now, retry=True)
        else:
            written = job_sql.finish_job(
                conn,
                attempt_id,
                status=JobStatus.failed,
                now=now,
                error_code=failure.code.value,
                error_message=decision.message,
            )
            status = JobStatus.failed
        if not written:
            raise StaleAttempt(stale_reason(attempt_id, row, "fail"))
        if status is JobStatus.failed:
            self._emit_final(conn, row, "failed", now)
        return status

    def _retry_policy(self, row: job_sql.JobRow) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            max_attempts=row.max_attempts,
            backoff_seconds=s.retry_backoff_seconds,
            backoff_max_seconds=s.retry_backoff_max_seconds,
            exhausted_nodes=s.exhausted_nodes_policy,
            same_node_delay_seconds=s.same_node_retry_delay_seconds,
        )
