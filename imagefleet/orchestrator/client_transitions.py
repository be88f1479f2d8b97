"""Client transitions: submit and cancel, and the reads a job's owner may make."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from imagefleet import netguard
from imagefleet.errors import Conflict, InvalidField, NotFound, QuotaExceeded
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.transitions import TransitionBase
from imagefleet.protocol import AttemptOutcome, JobStatus, Txt2ImgJob, Txt2ImgParams
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import idempotency
from imagefleet.store import jobs as job_sql
from imagefleet.store import webhooks as webhook_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.ids import new_id, plausible_id
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import latest_model


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
            if not plausible_id(job_id):
                raise ValueError(job_id)
            return cls(float(created), job_id)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidField(("query", "cursor"), "not a cursor returned by this API") from exc


class ClientTransitions(TransitionBase):
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

    @retry_conflicts
    def _submit(
        self, owner: ApiKey, job: Txt2ImgJob, idempotency_key: str | None
    ) -> tuple[job_sql.JobRow, bool]:
        request_hash = hashlib.sha256(job.model_dump_json().encode()).hexdigest()
        params = self._check_limits(job.params)
        self._check_webhook(job)
        now = self.clock()
        job_id = new_id()
        with self.db.write() as conn:
            if idempotency_key:
                window_start = now - self.settings.idempotency_window_seconds
                found = idempotency.find_idempotent(conn, owner.id, idempotency_key, window_start)
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
                idempotency.remember_idempotent(
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

    @retry_conflicts
    def cancel(self, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        """queued|running -> cancelled; a final job is returned unchanged. Holding the job's
        lock, it races nothing: a completion that committed first leaves the job succeeded
        (and the cancel answers that), one that comes after finds it cancelled and gets 409.
        A running attempt learns of it at its next heartbeat."""
        now = self.clock()
        with self.db.write() as conn:
            before = self._lock_owned(conn, owner, job_id)
            if before.status.is_final:
                return before
            job_sql.cancel_job(conn, job_id, now)
            if before.current_attempt_id:
                attempt_sql.end_attempt(
                    conn,
                    before.current_attempt_id,
                    outcome=AttemptOutcome.cancelled,
                    now=now,
                )
            row = job_sql.get_job(conn, job_id)
            assert row is not None
            webhooks.emit(conn, row, "cancelled", now)
        return row

    def attempts(self, owner: ApiKey, job_id: str) -> list[attempt_sql.AttemptRow]:
        """The job's attempt history (worker, node, times, outcome, error)."""
        with self.db.read() as conn:
            self._owned(conn, owner, job_id)
            return attempt_sql.job_attempts(conn, job_id)

    def deliveries(self, owner: ApiKey, job_id: str) -> list[webhook_sql.Delivery]:
        """The job's webhook delivery log."""
        with self.db.read() as conn:
            self._owned(conn, owner, job_id)
            return webhook_sql.for_job(conn, job_id)

    def outputs(
        self, conn: Connection, job_ids: list[str]
    ) -> dict[str, list[artifact_sql.ArtifactRow]]:
        return artifact_sql.job_outputs(conn, job_ids)

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
