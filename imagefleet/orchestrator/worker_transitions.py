"""Worker transitions: claim, heartbeat, upload, complete, fail, and the lease reaper.

Every one of them that changes an existing job locks the job row first (`_lock_current`) and
decides under that lock, or is one conditional UPDATE whose row count it checks; a call that
loses a race raises StaleAttempt (409) having written nothing: no accepted artifacts, no
webhook, no node-health count. The lock order is always job, then attempt, then artifacts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from imagefleet.artifacts.base import ArtifactStore, verify_direct_upload
from imagefleet.errors import InvalidField, PayloadTooLarge, StaleAttempt
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.retry import Failure, JobHistory, RetryPolicy, decide_retry
from imagefleet.orchestrator.transitions import TransitionBase, stale_reason, to_datetime
from imagefleet.protocol import (
    Assignment,
    AttemptOutcome,
    AttemptResult,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    FailureCode,
    HeartbeatRequest,
    HeartbeatResponse,
    JobStatus,
    Txt2ImgParams,
)
from imagefleet.scheduling.policy import Candidate, WorkerView
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import Model, model_by_id

# How much of the queue head the policy ranks per claim: enough to find a warm job, small enough
# that a claim stays cheap (and, on PostgreSQL, locks few rows).
CANDIDATE_WINDOW = 16
# A worker's row is rewritten at most this often (every claim would be a write per long poll).
WORKER_TOUCH_SECONDS = 10.0
LEASE_EXPIRED_MESSAGE = "the worker stopped sending heartbeats and its lease expired"
OUTPUT_TYPE = "image/png"


def output_key(job_id: str, attempt_id: str, index: int) -> str:
    """Where output `index` of an attempt lives: attempts never overwrite each other."""
    return f"jobs/{job_id}/{attempt_id}/{index}.png"


@dataclass(frozen=True)
class _Upload:
    index: int
    key: str
    size: int
    sha256: str


class WorkerTransitions(TransitionBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._models: dict[int, Model] = {}
        self._touched: dict[str, tuple[float, str]] = {}

    # --- claim ---------------------------------------------------------------------------------

    @retry_conflicts
    def claim(self, worker_key: ApiKey, request: ClaimRequest) -> Assignment | None:
        """Hands the best-ranked queued job to this worker, or None when nothing fits. The
        candidates are locked with SKIP LOCKED and taken with a conditional update, so two
        claimers never get the same job."""
        now = self.clock()
        worker = WorkerView(
            node_id=request.node_id,
            kinds=frozenset(request.capabilities.kinds),
            max_pixels=request.capabilities.max_pixels,
            resident_models=frozenset(request.resident_models),
            cached_models=frozenset(request.cached_models),
            vram_mb=request.capabilities.vram_mb,
        )
        with self.db.write() as conn:
            self._touch_worker(conn, request, now)
            self.health.check_claim(conn, request.node_id)
            queued = job_sql.queued_candidates(conn, list(worker.kinds), CANDIDATE_WINDOW, now)
            if any(job.allow_same_node and worker.node_id in job.failed_nodes for job in queued):
                worker = replace(worker, live_nodes=self._live_nodes(conn, now))
            ranked = self.policy(worker, [_candidate(job, now) for job in queued])
            for candidate in ranked:
                attempt_id = secrets.token_hex(16)
                expires = now + self.settings.lease_seconds
                row = job_sql.claim_job(
                    conn, candidate.job_id, attempt_id=attempt_id, lease_expires_at=expires, now=now
                )
                if row is None:
                    continue
                attempt_sql.insert_attempt(
                    conn,
                    attempt_id=attempt_id,
                    job_id=row.id,
                    seq=row.attempts,
                    worker_id=request.worker_id,
                    node_id=request.node_id,
                    worker_key_id=worker_key.id,
                    now=now,
                )
                webhooks.emit(conn, row, "running", now)
                model = self._model(conn, row.model_id)
                return Assignment(
                    job_id=row.id,
                    attempt_id=attempt_id,
                    fencing_token=row.attempts,
                    lease_seconds=self.settings.lease_seconds,
                    lease_expires_at=to_datetime(expires),
                    kind="txt2img",
                    params=Txt2ImgParams(**row.params),
                    models=[model.ref()],
                )
        return None

    # --- running -------------------------------------------------------------------------------

    @retry_conflicts
    def heartbeat(
        self, worker_key: ApiKey, attempt_id: str, request: HeartbeatRequest
    ) -> HeartbeatResponse:
        """Renews the lease and records progress (one conditional UPDATE). A job cancelled by
        its client answers `cancel`; an attempt that lost its lease gets 409."""
        now = self.clock()
        expires = now + self.settings.lease_seconds
        with self.db.write() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            if job_sql.renew_lease(
                conn,
                attempt_id,
                step=request.step,
                total=request.total_steps,
                lease_expires_at=expires,
            ):
                return HeartbeatResponse(action="continue", lease_expires_at=to_datetime(expires))
            ended = attempt_sql.get_attempt(conn, attempt_id)
            if ended is not None and ended.outcome is AttemptOutcome.cancelled:
                return HeartbeatResponse(action="cancel", reason="the client cancelled the job")
        raise StaleAttempt(
            f"attempt {attempt_id} no longer holds the lease on job {attempt.job_id}"
        )

    def check_current(self, worker_key: ApiKey, attempt_id: str) -> job_sql.JobRow:
        """The job this attempt owns (a read); StaleAttempt when it owns nothing any more."""
        with self.db.read() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            row = job_sql.get_job(conn, attempt.job_id)
            assert row is not None
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(stale_reason(attempt_id, row, "upload for"))
            return row

    async def upload_output(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        index: int,
        content_type: str,
        chunks: AsyncIterator[bytes],
    ) -> artifact_sql.ArtifactRow:
        """Streams one output file into the store and records it for the attempt. The
        ownership check before streaming keeps a stale attempt from storing anything; the one
        in `record_upload` is the one that counts."""
        store = self._store()
        job = await run_in_threadpool(self.check_current, worker_key, attempt_id)
        key = output_key(job.id, attempt_id, index)
        size, sha256 = await store.put_stream(key, chunks, self.settings.max_upload_bytes)
        await run_in_threadpool(
            lambda: self.record_upload(
                worker_key,
                attempt_id,
                index=index,
                key=key,
                size=size,
                sha256=sha256,
                content_type=content_type,
            )
        )
        return artifact_sql.ArtifactRow(
            key, job.id, attempt_id, index, content_type, size, sha256, None, None, None
        )

    @retry_conflicts
    def record_upload(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        *,
        index: int,
        key: str,
        size: int,
        sha256: str,
        content_type: str,
    ) -> None:
        """Records a file the attempt stored; refused if the attempt lost its lease meanwhile."""
        with self.db.write() as conn:
            _, row = self._lock_current(conn, worker_key, attempt_id, "upload for")
            self._record(conn, row.id, attempt_id, _Upload(index, key, size, sha256), content_type)

    # --- ending --------------------------------------------------------------------------------

    def complete(
        self, worker_key: ApiKey, attempt_id: str, request: CompleteRequest
    ) -> AttemptResult:
        """running -> succeeded. Idempotent for the winning attempt (a repeated complete gets
        the same answer); 409 for any other, and for a job cancelled or failed meanwhile.
        Files the worker put straight into the store are checked there first (present, within
        the size limit), outside the transaction, then recorded inside it."""
        direct = self._direct_uploads(worker_key, attempt_id, request)
        return self._complete(worker_key, attempt_id, request, direct)

    @retry_conflicts
    def _complete(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        direct: list[_Upload],
    ) -> AttemptResult:
        now = self.clock()
        with self.db.write() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            row = job_sql.lock_job(conn, attempt.job_id)
            assert row is not None
            if row.status is JobStatus.succeeded and row.result_attempt_id == attempt_id:
                return AttemptResult(job_id=row.id, job_status=row.status)
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(stale_reason(attempt_id, row, "complete"))
            for upload in direct:
                self._record(conn, row.id, attempt_id, upload, OUTPUT_TYPE)
            expected = row.params["num_images"]
            indexes = sorted(output.index for output in request.outputs)
            uploaded = {a.idx for a in artifact_sql.attempt_artifacts(conn, attempt_id)}
            if indexes != list(range(expected)) or not set(indexes) <= uploaded:
                raise InvalidField(
                    ("body", "outputs"),
                    f"expected outputs 0..{expected - 1}, each uploaded first; got {indexes}, "
                    f"uploaded {sorted(uploaded)}",
                )
            artifact_sql.accept_artifacts(
                conn,
                attempt_id,
                {
                    o.index: {"seed": o.seed, "width": o.width, "height": o.height}
                    for o in request.outputs
                },
            )
            if not job_sql.finish_job(
                conn,
                attempt_id,
                status=JobStatus.succeeded,
                now=now,
                stage_timings=request.timings.model_dump(),
            ):
                raise StaleAttempt(stale_reason(attempt_id, row, "complete"))
            attempt_sql.end_attempt(conn, attempt_id, outcome=AttemptOutcome.succeeded, now=now)
            self._emit_final(conn, row.id, "succeeded", now)
        return AttemptResult(job_id=row.id, job_status=JobStatus.succeeded)

    @retry_conflicts
    def fail(self, worker_key: ApiKey, attempt_id: str, request: FailRequest) -> AttemptResult:
        """Ends the attempt as failed (or handed back, for `worker_shutdown`) and requeues the
        job or fails it for good, as `decide_retry` says."""
        now = self.clock()
        failure = Failure(request.code, request.message, request.retryable)
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
            self._emit_final(conn, row.id, "failed", now)
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

    def _live_nodes(self, conn: Connection, now: float) -> frozenset[str]:
        return worker_sql.live_nodes(conn, now - 3 * self.settings.lease_seconds)

    def _direct_uploads(
        self, worker_key: ApiKey, attempt_id: str, request: CompleteRequest
    ) -> list[_Upload]:
        """Outputs the worker put straight into an S3-compatible store, checked there; empty
        when the store takes uploads through the API (those were recorded as they came)."""
        store = self.artifacts
        if store is None or store.direct_multipart_threshold is None:
            return []
        job = self.check_current(worker_key, attempt_id)
        found = []
        for output in request.outputs:
            key = output_key(job.id, attempt_id, output.index)
            try:
                info = verify_direct_upload(store, key, self.settings.max_upload_bytes)
            except FileNotFoundError:
                continue  # it came through the API instead, which recorded it already
            except ValueError as exc:  # ArtifactTooLarge
                raise PayloadTooLarge(str(exc)) from exc
            found.append(_Upload(output.index, key, info.size_bytes, output.sha256 or ""))
        return found

    def _record(
        self, conn: Connection, job_id: str, attempt_id: str, upload: _Upload, content_type: str
    ) -> None:
        artifact_sql.record_artifact(
            conn,
            key=upload.key,
            job_id=job_id,
            attempt_id=attempt_id,
            idx=upload.index,
            content_type=content_type,
            size_bytes=upload.size,
            sha256=upload.sha256,
            created_at=self.clock(),
        )

    def _store(self) -> ArtifactStore:
        if self.artifacts is None:
            raise RuntimeError("this lifecycle was built without an artifact store")
        return self.artifacts

    def _model(self, conn: Connection, model_id: int) -> Model:
        """Model rows never change (a new version is a new row), so they are cached."""
        model = self._models.get(model_id)
        if model is None:
            model = self._models[model_id] = model_by_id(conn, model_id)
        return model

    def _touch_worker(self, conn: Connection, request: ClaimRequest, now: float) -> None:
        """Records the worker's sighting, at most every WORKER_TOUCH_SECONDS per process unless
        its capabilities changed."""
        capabilities = request.capabilities.model_dump_json()
        last = self._touched.get(request.worker_id)
        if last and last[1] == capabilities and now - last[0] < WORKER_TOUCH_SECONDS:
            return
        worker_sql.touch_worker(conn, request, now)
        if len(self._touched) > 10_000:  # workers come and go; forget the old ones
            self._touched.clear()
        self._touched[request.worker_id] = (now, capabilities)


def _candidate(job: job_sql.QueuedJob, now: float) -> Candidate:
    return Candidate(
        job_id=job.id,
        kind=job.kind,
        priority=job.priority,
        pixels=job.pixels,
        waited_seconds=max(0.0, now - job.created_at),
        model_sha256=job.model_sha256,
        failed_nodes=job.failed_nodes,
        min_vram_mb=job.min_vram_mb,
        allow_same_node=job.allow_same_node,
    )
