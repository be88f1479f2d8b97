"""Job lifecycle: every named state transition, each one database transaction.

Routes and CLI commands only translate to and from these calls. The transitions:
submit, claim, heartbeat (renew_lease), record_upload, complete, fail, cancel, reap_expired.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from imagefleet import netguard
from imagefleet.config import Settings
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.errors import (
    Conflict,
    InvalidField,
    NotFound,
    QuotaExceeded,
    StaleAttempt,
)
from imagefleet.orchestrator.node_health import NodeHealth
from imagefleet.protocol import (
    Assignment,
    AttemptOutcome,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobStatus,
    Txt2ImgJob,
    Txt2ImgParams,
)
from imagefleet.scheduling.policy import Candidate, Policy, WorkerView, rank_affinity
from imagefleet.store import jobs as job_sql
from imagefleet.store import webhooks as webhook_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import Model, latest_model, model_by_id

# How much of the queue head the policy ranks per claim: enough to find a warm job, small enough
# that a claim stays cheap (and, on PostgreSQL, locks few rows).
CANDIDATE_WINDOW = 16
# A worker's row is rewritten at most this often (every claim would be a write per long poll).
WORKER_TOUCH_SECONDS = 10.0
HANDED_BACK = "worker_shutdown"
OUT_OF_MEMORY = "out_of_memory"


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class Cursor:
    created_at: float
    job_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.created_at!r}|{self.job_id}".encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            created, _, job_id = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
            if not job_sql.plausible_id(job_id):
                raise ValueError(job_id)
            return cls(float(created), job_id)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField(("query", "cursor"), "not a cursor returned by this API") from exc


class JobLifecycle:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        policy: Policy = rank_affinity,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.policy = policy
        self.health = NodeHealth(db, settings)
        self._models: dict[int, Model] = {}
        self._touched: dict[str, tuple[float, str]] = {}

    # --- client side ---------------------------------------------------------------------------

    def submit(
        self, owner: ApiKey, job: Txt2ImgJob, idempotency_key: str | None = None
    ) -> tuple[job_sql.JobRow, bool]:
        """Validates against server limits and queues the job; the seed is fixed here.

        With an idempotency key, a repeat of the same request within the window returns the
        first job (and True: replayed) instead of queueing another; a different request under
        the same key is a Conflict. Two identical submits racing on PostgreSQL collide on the
        key's primary key; the loser retries once and finds the winner's job.
        """
        try:
            return self._submit(owner, job, idempotency_key)
        except IntegrityError:
            if not idempotency_key:
                raise
            return self._submit(owner, job, idempotency_key)

    def _submit(
        self, owner: ApiKey, job: Txt2ImgJob, idempotency_key: str | None
    ) -> tuple[job_sql.JobRow, bool]:
        request_hash = hashlib.sha256(job.model_dump_json().encode()).hexdigest()
        params = self._check_limits(job.params)
        self._check_webhook(job)
        now = self.clock()
        job_id = secrets.token_hex(16)
        with self.db.write() as conn:
            if idempotency_key:
                window_start = now - self.settings.idempotency_window_seconds
                found = job_sql.find_idempotent(conn, owner.id, idempotency_key, window_start)
                if found:
                    if found[0] != request_hash:
                        raise Conflict(
                            "this Idempotency-Key was already used with a different request "
                            "body; use a new key for a new job"
                        )
                    replayed = job_sql.get_job(conn, found[1])
                    assert replayed is not None
                    return replayed, True
            model = latest_model(conn, params.model)
            if model is None:
                raise NotFound(f"no model named {params.model!r}; see GET /v1/models")
            queued = job_sql.count_queued(conn, owner.id)
            if queued >= self.settings.max_queued_per_key:
                raise QuotaExceeded(
                    f"this key already has {queued} queued jobs (the limit is "
                    f"{self.settings.max_queued_per_key}); wait for some to start",
                    retry_after=5.0,
                )
            job_sql.insert_job(
                conn,
                id=job_id,
                owner_key_id=owner.id,
                tier=owner.tier,
                kind=job.kind,
                status=JobStatus.queued.value,
                priority=self.settings.tier_priority.get(owner.tier, 0),
                params=params.model_dump(),
                model_id=model.id,
                pixels=params.width * params.height,
                created_at=now,
                max_attempts=self.settings.max_attempts_per_kind.get(
                    job.kind, self.settings.max_attempts
                ),
                allow_same_node=job.allow_same_node_retry,
                webhook_url=str(job.webhook.url) if job.webhook else None,
                webhook_events=",".join(job.webhook.events) if job.webhook else None,
            )
            if idempotency_key:
                job_sql.remember_idempotent(
                    conn, owner.id, idempotency_key, request_hash, job_id, now
                )
            row = job_sql.get_job(conn, job_id)
        assert row is not None
        return row, False

    def get(self, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        with self.db.read() as conn:
            return self._owned(conn, owner, job_id)

    def list_jobs(
        self, owner: ApiKey, *, status: JobStatus | None, cursor: str | None, limit: int
    ) -> tuple[list[job_sql.JobRow], str | None]:
        before = Cursor.decode(cursor) if cursor else None
        with self.db.read() as conn:
            rows = job_sql.list_jobs(
                conn,
                owner.id,
                status=status,
                before=(before.created_at, before.job_id) if before else None,
                limit=limit + 1,
            )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = Cursor(rows[-1].created_at, rows[-1].id).encode()
        return rows, next_cursor

    def cancel(self, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        """queued|running -> cancelled; a final job is returned unchanged. A running attempt
        learns of it at its next heartbeat and can no longer complete."""
        now = self.clock()
        with self.db.write() as conn:
            before = self._owned(conn, owner, job_id)
            attempt_id = job_sql.cancel_job(conn, job_id, now)
            if attempt_id:
                job_sql.end_attempt(conn, attempt_id, outcome="cancelled", now=now)
            row = job_sql.get_job(conn, job_id)
            assert row is not None
            if not before.status.is_final:
                webhooks.emit(conn, row, "cancelled", now)
        return row

    def attempts(self, owner: ApiKey, job_id: str) -> list[job_sql.AttemptRow]:
        """The job's attempt history (worker, node, times, outcome, error)."""
        with self.db.read() as conn:
            self._owned(conn, owner, job_id)
            return job_sql.job_attempts(conn, job_id)

    def deliveries(self, owner: ApiKey, job_id: str) -> list[webhook_sql.Delivery]:
        """The job's webhook delivery log."""
        with self.db.read() as conn:
            self._owned(conn, owner, job_id)
            return webhook_sql.for_job(conn, job_id)

    def outputs(self, conn: Connection, job_ids: list[str]) -> dict[str, list[job_sql.ArtifactRow]]:
        return job_sql.job_outputs(conn, job_ids)

    # --- worker side ---------------------------------------------------------------------------

    def claim(self, worker_key: ApiKey, request: ClaimRequest) -> Assignment | None:
        """Hands the best-ranked queued job to this worker, or None when nothing fits."""
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
                seen_since = now - 3 * self.settings.lease_seconds
                worker = replace(worker, live_nodes=worker_sql.live_nodes(conn, seen_since))
            ranked = self.policy(worker, [_candidate(job, now) for job in queued])
            for candidate in ranked:
                attempt_id = secrets.token_hex(16)
                expires = now + self.settings.lease_seconds
                row = job_sql.claim_job(
                    conn,
                    candidate.job_id,
                    attempt_id=attempt_id,
                    worker_id=request.worker_id,
                    node_id=request.node_id,
                    worker_key_id=worker_key.id,
                    lease_expires_at=expires,
                    now=now,
                )
                if row is None:
                    continue
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

    def heartbeat(
        self, worker_key: ApiKey, attempt_id: str, request: HeartbeatRequest
    ) -> HeartbeatResponse:
        """Renews the lease and records progress. A job cancelled by its client answers
        `cancel`; an attempt that lost its lease to the reaper or another attempt gets 409."""
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
            if attempt.outcome == "cancelled":
                return HeartbeatResponse(action="cancel", reason="the client cancelled the job")
        raise StaleAttempt(
            f"attempt {attempt_id} no longer holds the lease on job {attempt.job_id}"
        )

    def check_current(self, worker_key: ApiKey, attempt_id: str) -> job_sql.JobRow:
        """The job this attempt owns; StaleAttempt when it owns nothing any more."""
        with self.db.read() as conn:
            return self._current(conn, worker_key, attempt_id)

    def _current(self, conn: Connection, worker_key: ApiKey, attempt_id: str) -> job_sql.JobRow:
        attempt = self._attempt(conn, attempt_id, worker_key)
        row = job_sql.get_job(conn, attempt.job_id)
        if row is None or row.current_attempt_id != attempt_id:
            raise StaleAttempt(
                f"attempt {attempt_id} no longer holds the lease on job {attempt.job_id}"
            )
        return row

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
            row = self._current(conn, worker_key, attempt_id)
            job_sql.record_artifact(
                conn,
                key=key,
                job_id=row.id,
                attempt_id=attempt_id,
                idx=index,
                content_type=content_type,
                size_bytes=size,
                sha256=sha256,
                created_at=self.clock(),
            )

    def complete(
        self, worker_key: ApiKey, attempt_id: str, request: CompleteRequest
    ) -> AttemptOutcome:
        """running -> succeeded. Idempotent for the winning attempt; 409 for any other."""
        now = self.clock()
        with self.db.write() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            row = job_sql.get_job(conn, attempt.job_id)
            assert row is not None
            if row.status is JobStatus.succeeded and row.result_attempt_id == attempt_id:
                return AttemptOutcome(job_id=row.id, job_status=row.status)
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(
                    f"attempt {attempt_id} cannot complete job {row.id}: it lost its lease"
                )
            expected = row.params["num_images"]
            indexes = sorted(output.index for output in request.outputs)
            uploaded = {a.idx for a in job_sql.attempt_artifacts(conn, attempt_id)}
            if indexes != list(range(expected)) or not set(indexes) <= uploaded:
                raise InvalidField(
                    ("body", "outputs"),
                    f"expected outputs 0..{expected - 1}, each uploaded first; got {indexes}, "
                    f"uploaded {sorted(uploaded)}",
                )
            job_sql.accept_artifacts(
                conn,
                attempt_id,
                {
                    o.index: {"seed": o.seed, "width": o.width, "height": o.height}
                    for o in request.outputs
                },
            )
            job_sql.finish_job(
                conn,
                attempt_id,
                status=JobStatus.succeeded,
                now=now,
                stage_timings=request.timings.model_dump(),
            )
            job_sql.end_attempt(conn, attempt_id, outcome="succeeded", now=now)
            self._emit_final(conn, row, "succeeded", now)
        return AttemptOutcome(job_id=row.id, job_status=JobStatus.succeeded)

    def fail(self, worker_key: ApiKey, attempt_id: str, request: FailRequest) -> AttemptOutcome:
        """A retryable failure requeues the job until max_attempts failures; a final one (or the
        last allowed) fails it. `worker_shutdown` hands the job back without counting."""
        now = self.clock()
        handed_back = request.code == HANDED_BACK
        with self.db.write() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            row = job_sql.get_job(conn, attempt.job_id)
            assert row is not None
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(
                    f"attempt {attempt_id} cannot fail job {row.id}: it lost its lease"
                )
            outcome = "handed_back" if handed_back else "failed"
            job_sql.end_attempt(
                conn,
                attempt_id,
                outcome=outcome,
                now=now,
                error_code=request.code,
                error_message=request.message,
            )
            if handed_back:
                job_sql.requeue_job(
                    conn, attempt_id, error_code=request.code, error_message=request.message
                )
                return AttemptOutcome(job_id=row.id, job_status=JobStatus.queued)
            self.health.after_failure(conn, attempt.node_id, request.code, now)
            min_vram = None
            if request.code == OUT_OF_MEMORY:
                min_vram = worker_sql.vram_mb(conn, attempt.worker_id)
            status = self._retry_or_fail(
                conn,
                row,
                attempt_id,
                request.code,
                request.message,
                now,
                retryable=request.retryable,
                min_vram_mb=min_vram,
            )
        return AttemptOutcome(job_id=row.id, job_status=status)

    def grace_leases(self) -> int:
        """Extends every running lease to at least one lease from now (at start-up: an
        orchestrator restart must not cost the jobs of workers that kept working)."""
        with self.db.write() as conn:
            return job_sql.extend_leases(conn, self.clock() + self.settings.lease_seconds)

    def reap_expired(self, limit: int = 500) -> int:
        """Requeues (or fails) running jobs whose lease expired. Safe to run concurrently: each
        requeue is conditional on the attempt still owning the job."""
        now = self.clock()
        reaped = 0
        with self.db.write() as conn:
            for attempt_id in job_sql.expired_attempts(conn, now, limit):
                row = self.check_job_of(conn, attempt_id)
                if row is None:
                    continue
                message = "the worker stopped sending heartbeats and its lease expired"
                job_sql.end_attempt(
                    conn,
                    attempt_id,
                    outcome="lease_expired",
                    now=now,
                    error_code="lease_expired",
                    error_message=message,
                )
                # The node vanished; the job did nothing wrong: retry elsewhere at once.
                self._retry_or_fail(
                    conn,
                    row,
                    attempt_id,
                    "lease_expired",
                    message,
                    now,
                    retryable=True,
                    backoff=False,
                )
                reaped += 1
        return reaped

    # --- helpers -------------------------------------------------------------------------------

    def check_job_of(self, conn: Connection, attempt_id: str) -> job_sql.JobRow | None:
        attempt = job_sql.get_attempt(conn, attempt_id)
        return job_sql.get_job(conn, attempt.job_id) if attempt else None

    def _retry_or_fail(
        self,
        conn: Connection,
        row: job_sql.JobRow,
        attempt_id: str,
        code: str,
        message: str,
        now: float,
        *,
        retryable: bool,
        min_vram_mb: int | None = None,
        backoff: bool = True,
    ) -> JobStatus:
        """Requeues with backoff while failures remain under the job's max attempts; else the
        job fails for good."""
        failures = job_sql.count_failures(conn, row.id)
        if retryable and failures < row.max_attempts:
            job_sql.requeue_job(
                conn,
                attempt_id,
                error_code=code,
                error_message=message,
                run_after=now + self._backoff(failures) if backoff else None,
                min_vram_mb=min_vram_mb,
            )
            return JobStatus.queued
        if retryable:
            message = f"gave up after {failures} failed attempts; last: {message}"
        job_sql.finish_job(
            conn,
            attempt_id,
            status=JobStatus.failed,
            now=now,
            error_code=code,
            error_message=message,
        )
        self._emit_final(conn, row, "failed", now)
        return JobStatus.failed

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

    def _backoff(self, failures: int) -> float:
        """Seconds before a job that failed `failures` times is offered again."""
        base = self.settings.retry_backoff_seconds * 2 ** max(0, failures - 1)
        return min(base, self.settings.retry_backoff_max_seconds)

    @staticmethod
    def _emit_final(conn: Connection, before: job_sql.JobRow, event: str, now: float) -> None:
        """Queues the webhook event for a job that just reached a final state (read again only
        when it has a webhook, to send its final status and error)."""
        if not before.webhook_url:
            return
        final = job_sql.get_job(conn, before.id)
        if final is not None:
            webhooks.emit(conn, final, event, now)

    def _owned(self, conn: Connection, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        row = job_sql.get_job(conn, job_id)
        if row is None or row.owner_key_id != owner.id:
            raise NotFound(f"no job {job_id!r}")
        return row

    @staticmethod
    def _attempt(conn: Connection, attempt_id: str, worker_key: ApiKey) -> job_sql.AttemptRow:
        """The attempt, if this worker key claimed it: one worker cannot act on another's."""
        attempt = job_sql.get_attempt(conn, attempt_id)
        if attempt is None or attempt.worker_key_id != worker_key.id:
            raise NotFound(f"no attempt {attempt_id!r} for this worker key")
        return attempt

    def _check_limits(self, params: Txt2ImgParams) -> Txt2ImgParams:
        s = self.settings
        for field in ("width", "height"):
            value = getattr(params, field)
            if not s.min_side <= value <= s.max_side:
                raise InvalidField(
                    ("body", "params", field),
                    f"{field} must be between {s.min_side} and {s.max_side} "
                    f"(a multiple of 8), got {value}",
                )
        pixels = params.width * params.height
        if pixels > s.max_pixels:
            raise InvalidField(
                ("body", "params", "width"),
                f"width*height must be at most {s.max_pixels} pixels, got "
                f"{params.width}x{params.height}={pixels}",
            )
        if params.seed is None:
            params = params.model_copy(update={"seed": secrets.randbelow(2**32)})
        return params

    def _check_webhook(self, job: Txt2ImgJob) -> None:
        """Refuses webhook URLs on private networks unless the operator allowed them."""
        if job.webhook is None or self.settings.webhook_allow_private:
            return
        try:
            netguard.check_public_host(job.webhook.url.host or "", webhooks.PRIVATE_HINT)
        except netguard.PrivateAddressError as exc:
            raise InvalidField(("body", "webhook", "url"), str(exc)) from exc


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
