"""Worker transitions: claim, heartbeat, upload, complete, fail, and the lease reaper.

Every one of them that changes an existing job locks the job row first (`_lock_current`) and
decides under that lock, or is one conditional UPDATE whose row count it checks; a call that
loses a race raises StaleAttempt (409) having written nothing: no accepted artifacts, no
webhook, no node-health count. The lock order is always job, then attempt, then artifacts.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Connection

from imagefleet.errors import (
    InvalidField,
    StaleAttempt,
)
from imagefleet.kinds import get_kind, kind_names
from imagefleet.orchestrator import events, webhooks
from imagefleet.orchestrator.checkpoint_direct import DirectCheckpoints
from imagefleet.orchestrator.checkpoint_transitions import StagedModel
from imagefleet.orchestrator.claim_policy import ClaimPolicy
from imagefleet.orchestrator.retry import Failure, JobHistory, RetryPolicy, decide_retry
from imagefleet.orchestrator.transitions import stale_reason, to_datetime
from imagefleet.orchestrator.worker_files import StoredFile, output_key
from imagefleet.protocol import AttemptOutcome, FailureCode, JobStatus
from imagefleet.scheduling.inputs import Candidate
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import batch_mates as mate_sql
from imagefleet.store import checkpoints as checkpoint_sql
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store import events as event_sql
from imagefleet.store import inputs as input_sql
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import worker_state as state_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import (
    Assignment,
    AttemptResult,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    InputRef,
    UploadTarget,
)

# A worker's row is rewritten at most this often (every claim would be a write per long poll).
WORKER_TOUCH_SECONDS = 10.0
LEASE_EXPIRED_MESSAGE = "the worker stopped sending heartbeats and its lease expired"


class WorkerDraining(RuntimeError):
    """The claiming worker's node is being removed by the autoscaler; the message says why."""


class WorkerTransitions(DirectCheckpoints):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touched: dict[str, tuple[float, str, str]] = {}
        self.claim_policy = ClaimPolicy(self.settings)

    # --- claim ---------------------------------------------------------------------------------

    def claim(self, worker_key: ApiKey, request: ClaimRequest) -> Assignment | None:
        """One job (`claim_batch` with max_jobs 1): the best-ranked, or None."""
        taken = self.claim_batch(worker_key, request.model_copy(update={"max_jobs": 1}))
        return taken[0] if taken else None

    @retry_conflicts
    def claim_batch(self, worker_key: ApiKey, request: ClaimRequest) -> list[Assignment]:
        """Hands the best-ranked queued job to this worker, or nothing when nothing fits (or
        what fits is better left for a busy worker that holds its models). A bounded candidate
        set is gathered by index probes with every hard limit in the SQL (locked with SKIP
        LOCKED), ranked by the policy, and the best taken with a conditional update; a job
        another claimer took first falls through to the next, so two claimers never get the
        same job. With `max_jobs` > 1, up to that many in all: the first, then micro-batch
        mates (same batch key, oldest first, taken the same way in the same transaction)."""
        now = self.clock()
        capabilities = request.capabilities
        known_kinds = set(kind_names())
        limits = claim_sql.WorkerLimits(
            request.node_id,
            [kind for kind in capabilities.kinds if kind in known_kinds],
            capabilities.max_pixels,
            capabilities.vram_mb,
        )
        if not limits.kinds:
            return []
        planner = self.claim_policy
        with self.db.write() as conn:
            self._touch_worker(conn, request, now)
            self.health.check_claim(conn, request.node_id)
            draining = worker_sql.drain_reason(conn, request.node_id)
            if draining is not None:
                raise WorkerDraining(draining)
            queued = claim_sql.gather(
                conn,
                limits,
                planner.policy.selection,
                planner.probes(request),
                now,
                planner.priorities,
                planner.owners(conn, now),
            )
            if not queued:
                return []
            live: frozenset[str] = frozenset()
            if any(job.allow_same_node and request.node_id in job.failed_nodes for job in queued):
                live = self._live_nodes(conn, now)
            worker = planner.worker_view(request, live)
            for decision in planner.rank(conn, worker, queued, now):
                job = decision.candidate
                sha256 = _checkpoint_sha256(job)
                first = self._take(
                    conn, worker_key, request, job.job_id, decision.reason, sha256, now
                )
                if first is None:
                    continue
                row, assignment = first
                chosen = next(q for q in queued if q.id == row.id)
                planner.served(conn, row.owner_key_id, request, chosen, now)
                taken = [assignment]
                if request.max_jobs > 1:
                    taken += self._take_mates(conn, worker_key, request, limits, row, sha256, now)
                return taken
        return []

    def _take(
        self,
        conn: Connection,
        worker_key: ApiKey,
        request: ClaimRequest,
        job_id: str,
        placement: str | None,
        checkpoint_sha256: str,
        now: float,
    ) -> tuple[job_sql.JobRow, Assignment] | None:
        """queued -> running for one job with a new attempt (compare-and-set), or None when
        another claimer took it first."""
        attempt_id = secrets.token_hex(16)
        expires = now + self.settings.lease_seconds
        row = job_sql.claim_job(
            conn,
            job_id,
            attempt_id=attempt_id,
            lease_expires_at=expires,
            now=now,
            placement=placement,
        )
        if row is None:
            return None
        attempt_sql.insert_attempt(
            conn,
            attempt_id=attempt_id,
            job_id=row.id,
            seq=row.attempts,
            worker_id=request.worker_id,
            node_id=request.node_id,
            worker_key_id=worker_key.id,
            now=now,
            pool=request.pool,
            gpu=request.capabilities.gpu_name,
            model_cache=_model_cache(checkpoint_sha256, request),
        )
        events.running(conn, row, now)
        webhooks.emit(conn, row, "running", now)
        combo = job_model_sql.combos(conn, [row.id])[row.id]
        inputs = input_sql.job_input_rows(conn, row.id)
        assignment = self._assignment(row, attempt_id, expires, combo, inputs)
        assignment.checkpoints = self._resume_points(conn, row, attempt_id)
        return row, assignment

    def _take_mates(
        self,
        conn: Connection,
        worker_key: ApiKey,
        request: ClaimRequest,
        limits: claim_sql.WorkerLimits,
        first: job_sql.JobRow,
        checkpoint_sha256: str,
        now: float,
    ) -> list[Assignment]:
        """Up to max_jobs - 1 more jobs with the first one's batch key (kinds/batching.py),
        oldest first; each its own attempt. They bypass the ranking: they ride along with a
        job the policy chose, on models that job loads anyway."""
        spec = get_kind(first.kind)
        key = spec.batch_key(spec.parse(first.params))
        if key is None or first.combo_key is None:
            return []
        wanted = request.max_jobs - 1
        mates = mate_sql.queued_mates(
            conn,
            limits,
            kind=first.kind,
            combo_key=first.combo_key,
            exclude=first.id,
            now=now,
            limit=4 * wanted,
        )
        taken: list[Assignment] = []
        placement = f"micro-batch with job {first.id}"
        for mate in mates:
            if len(taken) >= wanted:
                break
            if spec.batch_key(spec.parse(mate.params)) != key:
                continue
            got = self._take(conn, worker_key, request, mate.id, placement, checkpoint_sha256, now)
            if got is not None:
                taken.append(got[1])
        return taken

    def _assignment(
        self,
        row: job_sql.JobRow,
        attempt_id: str,
        expires: float,
        combo: list[job_model_sql.JobModel],
        inputs: dict[str, input_sql.InputRow],
    ) -> Assignment:
        """What the worker needs: params, the resolved combo, where to fetch inputs and (with
        an S3-compatible store) where to put each output."""
        store = self._file_store()
        outputs = self._output_spec(row)
        media_type = outputs.media_types[0]
        targets: list[UploadTarget] = []
        for index in range(outputs.count):
            url = store.presigned_put(
                output_key(row.id, attempt_id, index, outputs.extension(media_type)),
                media_type,
                self.settings.max_upload_bytes,
            )
            if url is None:
                targets = []
                break
            targets.append(
                UploadTarget(
                    index=index,
                    url=url,
                    content_type=media_type,
                    multipart_threshold_bytes=store.direct_multipart_threshold or 0,
                )
            )
        return Assignment(
            job_id=row.id,
            attempt_id=attempt_id,
            fencing_token=row.attempts,
            lease_seconds=self.settings.lease_seconds,
            lease_expires_at=to_datetime(expires),
            kind=row.kind,
            params=row.params,
            models=[item.model.ref(item.role, item.weight) for item in combo],
            combo_key=row.combo_key,
            inputs=[
                InputRef(
                    name=name,
                    input_id=item.id,
                    url=store.presigned_get(item.key)
                    or f"/v1/worker/attempts/{attempt_id}/inputs/{name}",
                    sha256=item.sha256,
                    content_type=item.content_type,
                    width=item.width,
                    height=item.height,
                )
                for name, item in sorted(inputs.items())
            ],
            uploads=targets,
            placement=row.placement,
        )

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
            before = event_sql.reported_progress(conn, attempt.job_id)
            if job_sql.renew_lease(
                conn,
                attempt_id,
                worker_key_id=worker_key.id,
                step=request.step,
                total=request.total_steps,
                lease_expires_at=expires,
            ):
                if request.loss is not None:
                    checkpoint_sql.record_point(
                        conn,
                        job_id=attempt.job_id,
                        attempt_id=attempt_id,
                        step=request.step,
                        loss=request.loss,
                        learning_rate=request.learning_rate or 0.0,
                        now=now,
                    )
                events.progress(
                    conn, attempt.job_id, before, request.step, request.total_steps, now
                )
                return HeartbeatResponse(
                    action="continue",
                    lease_expires_at=to_datetime(expires),
                    drain=worker_sql.drain_reason(conn, attempt.node_id),
                )
            ended = attempt_sql.get_attempt(conn, attempt_id)
            if ended is not None and ended.outcome is AttemptOutcome.cancelled:
                return HeartbeatResponse(action="cancel", reason="the client cancelled the job")
        raise StaleAttempt(
            f"attempt {attempt_id} no longer holds the lease on job {attempt.job_id}"
        )

    # --- ending --------------------------------------------------------------------------------

    def complete(
        self, worker_key: ApiKey, attempt_id: str, request: CompleteRequest
    ) -> AttemptResult:
        """running -> succeeded. Idempotent for the winning attempt (a repeated complete gets
        the same answer); 409 for any other, and for a job cancelled or failed meanwhile.
        Files the worker put straight into the store are checked there first (present, within
        the size limit), outside the transaction, then recorded inside it."""
        direct = self._direct_uploads(worker_key, attempt_id, request)
        return self._complete_stored(worker_key, attempt_id, request, direct)

    def _complete_stored(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        stored: list[StoredFile],
    ) -> AttemptResult:
        """Completes with the files already in the store (`stored`), staging a trained model
        first and deleting the checkpoints the completion made obsolete after it."""
        staged = self._stage_result(worker_key, attempt_id)
        result, doomed = self._complete(worker_key, attempt_id, request, stored, staged)
        self._delete_files(doomed)
        return result

    @retry_conflicts
    def _complete(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: CompleteRequest,
        direct: list[StoredFile],
        staged: StagedModel | None,
    ) -> tuple[AttemptResult, list[str]]:
        """The transaction of `complete`; also returns the checkpoint files to delete."""
        now = self.clock()
        with self.db.write() as conn:
            row = self._attempt_job(conn, worker_key, attempt_id)
            if row.status is JobStatus.succeeded and row.result_attempt_id == attempt_id:
                return AttemptResult(job_id=row.id, job_status=row.status), []
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(stale_reason(attempt_id, row, "complete"))
            spec = self._output_spec(row)
            for upload in direct:
                self._record(
                    conn, row.id, attempt_id, upload, upload.content_type or spec.media_types[0]
                )
            expected = spec.count
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
            doomed = self._finish_training(conn, row, staged, now)
            self._emit_final(conn, row, "succeeded", now)
        return AttemptResult(job_id=row.id, job_status=JobStatus.succeeded), doomed

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

    def _live_nodes(self, conn: Connection, now: float) -> frozenset[str]:
        return worker_sql.live_nodes(conn, now - 3 * self.settings.lease_seconds)

    def _touch_worker(self, conn: Connection, request: ClaimRequest, now: float) -> None:
        """Records the worker's sighting, at most every WORKER_TOUCH_SECONDS per process unless
        its capabilities changed, and what it holds (`worker_state`, the one record of it) when
        that changed: the claim writes nothing when a worker repeats its report, and the upsert
        writes no row when another replica already recorded the same report."""
        capabilities = request.capabilities.model_dump_json()
        reported = request.model_dump_json(
            include={"capabilities", "resident_combos", "resident_models", "cached_models"}
        )
        last = self._touched.get(request.worker_id)
        if last and last[1] == reported and now - last[0] < WORKER_TOUCH_SECONDS:
            return
        if last is None or last[2] != capabilities or now - last[0] >= WORKER_TOUCH_SECONDS:
            worker_sql.touch_worker(conn, request, now)
        state_sql.record(conn, request, now, WORKER_TOUCH_SECONDS)
        if len(self._touched) > 10_000:  # workers come and go; forget the old ones
            self._touched.clear()
        self._touched[request.worker_id] = (now, reported, capabilities)


def _checkpoint_sha256(job: Candidate) -> str:
    return next((sha256 for sha256, _, role in job.models if role == "checkpoint"), "")


def _model_cache(sha256: str, request: ClaimRequest) -> str | None:
    """Where the job's checkpoint was on the claiming worker (model usage in /metrics)."""
    if not sha256:
        return None
    if sha256 in request.resident_models:
        return "gpu"
    return "disk" if sha256 in request.cached_models else "miss"
