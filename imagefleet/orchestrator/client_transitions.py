"""Client transitions: submit and cancel, and the reads a job's owner may make."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from imagefleet import netguard
from imagefleet.errors import Conflict, Forbidden, InvalidField, NotFound, QuotaExceeded
from imagefleet.kinds import KindSpec, Limits, Requirements, combo_key, get_kind
from imagefleet.kinds.base import InputInfo
from imagefleet.models.resolve import resolve_models
from imagefleet.orchestrator import events, webhooks
from imagefleet.orchestrator.queue_transitions import AHEAD_CAP, QueueTransitions
from imagefleet.protocol import AttemptOutcome, JobStatus, ModelRole
from imagefleet.scheduling.waiting import SeenWorker
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import folded_submit as folded_submit_sql
from imagefleet.store import idempotency
from imagefleet.store import inputs as input_sql
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import queue_position as position_sql
from imagefleet.store import webhooks as webhook_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.ids import new_id, plausible_id
from imagefleet.store.keys import ApiKey


@dataclass(frozen=True)
class _NamedInputs:
    infos: dict[str, InputInfo]
    ids: dict[str, str]


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


class Submitted(NamedTuple):
    """What a submit gives the API: the job as stored; whether it replayed an earlier submit
    (an idempotency key), and for a new job its resolved combo, the workers seen at submit and
    its place in the queue, so its answer is built without reading any of them again."""

    row: job_sql.JobRow
    replayed: bool
    combo: list[job_model_sql.JobModel] | None = None
    seen: list[SeenWorker] | None = None
    ahead: tuple[int, int] | None = None  # queued jobs ahead of it: everyone's, its owner's


class ClientTransitions(QueueTransitions):
    def submit(
        self, owner: ApiKey, job: Any, idempotency_key: str | None = None
    ) -> tuple[job_sql.JobRow, bool]:
        """Admits the job against server limits, resolves its models and inputs, and queues
        it; the seed is fixed here.

        `job` is any registered kind's submit model (`kind`, `params`, `webhook`, ...). With an
        idempotency key, a repeat of the same request within the window returns the first job
        (and True: replayed) instead of queueing another; a different request under the same
        key is a Conflict. Two identical submits racing on PostgreSQL collide on the key's
        primary key; the loser retries once and finds the winner's job.
        """
        submitted = self.submit_with_combo(owner, job, idempotency_key)
        return submitted.row, submitted.replayed

    def submit_with_combo(
        self, owner: ApiKey, job: Any, idempotency_key: str | None = None
    ) -> Submitted:
        """`submit`, also returning the new job's resolved combo and the workers seen (None
        for a replay), so that the API can show the job without reading them again."""
        try:
            return self._submit(owner, job, idempotency_key)
        except IntegrityError:
            if not idempotency_key:
                raise
            return self._submit(owner, job, idempotency_key)

    @retry_conflicts
    def _submit(self, owner: ApiKey, job: Any, idempotency_key: str | None) -> Submitted:
        spec = get_kind(job.kind)
        request_hash = hashlib.sha256(job.model_dump_json().encode()).hexdigest()
        self._check_webhook(job)
        now = self.clock()
        job_id = new_id()
        with self.db.write() as conn:
            if idempotency_key:
                replayed = self._replay(conn, owner, idempotency_key, request_hash, now)
                if replayed is not None:
                    return Submitted(replayed, True)
            spec, submitted = spec.bind(conn, owner, job.params)
            named_inputs = self._inputs(conn, owner, spec.requirements(submitted))
            params = spec.admit(submitted, self._limits(), named_inputs.infos)
            needs = spec.requirements(params)
            combo = resolve_models(conn, needs.models)
            priority = self.settings.tier_priority.get(owner.tier, 0)
            ahead = self._admit(conn, owner, priority, now)
            checkpoint = next(
                (item.model for item in combo if item.role is ModelRole.checkpoint), None
            )
            values = dict(
                id=job_id,
                owner_key_id=owner.id,
                tier=owner.tier,
                kind=spec.name,
                status=JobStatus.queued.value,
                priority=priority,
                params=params.model_dump(mode="json"),
                model_id=checkpoint.id if checkpoint else None,
                pixels=needs.pixels,
                cost_units=needs.cost_units,
                required_vram_mb=needs.min_vram_mb or None,
                combo_key=combo_key(
                    [(item.role, item.model.sha256) for item in combo], needs.warm_key
                ),
                created_at=now,
                max_attempts=self._max_attempts(spec),
                allow_same_node=job.allow_same_node_retry,
                webhook_url=str(job.webhook.url) if job.webhook else None,
                webhook_events=",".join(job.webhook.events) if job.webhook else None,
            )
            row = folded_submit_sql.queue(
                conn, values, combo, named_inputs.ids, events.queued_data(attempts=0)
            )
            if idempotency_key:
                idempotency.remember_idempotent(
                    conn, owner.id, idempotency_key, request_hash, job_id, now
                )
            row, seen = self.warn_if_unservable(conn, row, combo)
        return Submitted(row, False, combo, seen, ahead)

    def _replay(
        self, conn: Connection, owner: ApiKey, key: str, request_hash: str, now: float
    ) -> job_sql.JobRow | None:
        window_start = now - self.settings.idempotency_window_seconds
        found = idempotency.find_idempotent(conn, owner.id, key, window_start)
        if not found:
            return None
        if found[0] != request_hash:
            raise Conflict(
                "this Idempotency-Key was already used with a different request "
                "body; use a new key for a new job"
            )
        replayed = job_sql.get_job(conn, found[1])
        assert replayed is not None
        return replayed

    def _inputs(self, conn: Connection, owner: ApiKey, needs: Requirements) -> _NamedInputs:
        """The uploaded inputs the job names, which must be the owner's."""
        rows = input_sql.owned_inputs(conn, owner.id, [need.input_id for need in needs.inputs])
        infos: dict[str, InputInfo] = {}
        ids: dict[str, str] = {}
        for need in needs.inputs:
            row = rows.get(need.input_id)
            if row is None:
                raise NotFound(
                    f"no input {need.input_id!r} (field {'.'.join(map(str, need.loc))}); "
                    "upload it first with POST /v1/inputs"
                )
            infos[need.name] = InputInfo(
                row.id, row.content_type, row.width, row.height, row.images, row.uncaptioned
            )
            ids[need.name] = row.id
        return _NamedInputs(infos, ids)

    def _admit(self, conn: Connection, owner: ApiKey, priority: int, now: float) -> tuple[int, int]:
        """Refuses a job over the key's queued-jobs limit; otherwise returns the new job's place
        (queued jobs ahead: everyone's, the owner's), counted in the same statement."""
        limit = self.settings.max_queued_per_key
        *ahead, queued = position_sql.admission(conn, owner.id, priority, now, AHEAD_CAP, limit)
        if queued >= limit:
            raise QuotaExceeded(
                f"this key already has {limit} queued jobs (the limit); wait for some to start",
                retry_after=5.0,
            )
        return ahead[0], ahead[1]

    def _max_attempts(self, spec: KindSpec) -> int:
        configured = self.settings.max_attempts_per_kind.get(spec.name)
        return configured or spec.max_attempts or self.settings.max_attempts

    def _limits(self) -> Limits:
        s = self.settings
        return Limits(
            min_side=s.min_side,
            max_side=s.max_side,
            max_pixels=s.max_pixels,
            max_loras=s.max_loras,
            lora_weight_min=s.lora_weight_min,
            lora_weight_max=s.lora_weight_max,
            max_embeddings=s.max_embeddings,
        )

    def get(self, owner: ApiKey, job_id: str) -> job_sql.JobRow:
        with self.db.read() as conn:
            return self._readable(conn, owner, job_id)

    def list_jobs(
        self,
        owner: ApiKey,
        *,
        status: JobStatus | None,
        cursor: str | None,
        limit: int,
        all_tenants: bool = False,
    ) -> tuple[list[job_sql.JobRow], str | None]:
        """The key's jobs, newest first; with `all_tenants` (admin keys only) every tenant's."""
        if all_tenants and owner.scope != "admin":
            raise Forbidden("listing every tenant's jobs (all_tenants=true) needs an admin key")
        before = Cursor.decode(cursor) if cursor else None
        with self.db.read() as conn:
            rows = job_sql.list_jobs(
                conn,
                None if all_tenants else owner.id,
                status=status,
                before=(before.created_at, before.job_id) if before else None,
                limit=limit + 1,
            )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = Cursor(rows[-1].created_at, rows[-1].id).encode()
        return rows, next_cursor

    def owner_names(self, rows: list[job_sql.JobRow]) -> dict[str, str]:
        with self.db.read() as conn:
            return job_sql.owner_names(conn, {row.owner_key_id for row in rows})

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
            events.final(conn, row, now)
            webhooks.emit(conn, row, "cancelled", now)
        return row

    def attempts(self, owner: ApiKey, job_id: str) -> list[attempt_sql.AttemptRow]:
        """The job's attempt history (worker, node, times, outcome, error)."""
        with self.db.read() as conn:
            self._readable(conn, owner, job_id)
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

    def output_file(self, owner: ApiKey, job_id: str, index: int) -> tuple[bytes, str, str]:
        """An accepted output of the owner's job: its bytes, type and a file name."""
        with self.db.read() as conn:
            row = self._readable(conn, owner, job_id)
            outputs = artifact_sql.job_outputs(conn, [row.id])[row.id]
        artifact = next((a for a in outputs if a.idx == index), None)
        if artifact is None:
            raise NotFound(f"job {job_id} has no output {index}")
        filename = f"{job_id}-{index}.{artifact.key.rpartition('.')[2]}"
        return self.artifacts.read(artifact.key), artifact.content_type, filename

    def details(
        self, rows: list[job_sql.JobRow]
    ) -> tuple[dict[str, list[artifact_sql.ArtifactRow]], dict[str, list[job_model_sql.JobModel]]]:
        """The accepted outputs (of succeeded jobs) and the combos of a page of jobs, read in
        one transaction."""
        with self.db.read() as conn:
            finished = [row.id for row in rows if row.status is JobStatus.succeeded]
            outputs: dict[str, list[artifact_sql.ArtifactRow]] = {row.id: [] for row in rows}
            outputs.update(artifact_sql.job_outputs(conn, finished))
            return outputs, job_model_sql.combos(conn, [row.id for row in rows])

    def _check_webhook(self, job: Any) -> None:
        """Refuses webhook URLs on private networks unless the operator allowed them."""
        if job.webhook is None or self.settings.webhook_allow_private:
            return
        try:
            netguard.check_public_host(job.webhook.url.host or "", webhooks.PRIVATE_HINT)
        except netguard.PrivateAddressError as exc:
            raise InvalidField(("body", "webhook", "url"), str(exc)) from exc
