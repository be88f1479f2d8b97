"""Training transitions: `checkpoint` (an attempt reports a resumable checkpoint it stored),
`report_resume` (where a new attempt starts, and the corrupt checkpoints it passed over), the
checkpoints handed to a resuming attempt with its assignment, and what completion of a
training job adds: the trained model registered, every checkpoint deleted.

Each is fenced like every other worker call: it locks the job row, checks the attempt still
owns the job (StaleAttempt, 409, nothing written otherwise) and decides under that lock.
Files are written before their row and deleted after theirs is gone, so a crash in between
leaves at worst an orphan file, never a row pointing at nothing that a worker would resume.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import Connection

from imagefleet.api_views import ModelView
from imagefleet.artifacts.base import ArtifactStore
from imagefleet.artifacts.local import LocalArtifactStore
from imagefleet.artifacts.s3 import S3ArtifactStore
from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField, NotFound, StaleAttempt
from imagefleet.kinds import get_kind
from imagefleet.kinds.base import CheckpointPolicy, ResultModel
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.checkpoint_views import TrainingFacts, training_view
from imagefleet.orchestrator.views import model_view
from imagefleet.orchestrator.worker_files import WorkerFiles, output_key
from imagefleet.protocol import JobStatus
from imagefleet.scaling.pricing import PriceTable
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import checkpoints as checkpoint_sql
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import models as model_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import Database, retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.training_protocol import CheckpointReceipt, ResumeReport, TrainingView
from imagefleet.worker_protocol import ResumeCheckpoint

log = logging.getLogger("imagefleet.checkpoints")
CHECKPOINT_MEDIA_TYPE = "application/zip"


def checkpoint_key(job_id: str, attempt_id: str, step: int) -> str:
    """Where an attempt's checkpoint at `step` lives; attempts never overwrite each other."""
    return f"jobs/{job_id}/{attempt_id}/checkpoints/{step:07d}.zip"


def trained_model_key(sha256: str) -> str:
    """A registered model outlives its job (retention deletes job files): content-addressed."""
    return f"models/trained/{sha256}.safetensors"


@dataclass(frozen=True)
class StagedModel:
    """A succeeded job's model file, copied out of the job's files before it is registered."""

    spec: ResultModel
    source: str
    sha256: str
    size_bytes: int


class CheckpointTransitions(WorkerFiles):
    # --- checkpoint ----------------------------------------------------------------------------

    async def upload_checkpoint(
        self, worker_key: ApiKey, attempt_id: str, step: int, chunks: AsyncIterator[bytes]
    ) -> CheckpointReceipt:
        """Streams a checkpoint archive into the store, then runs the `checkpoint` transition.
        A stale attempt is refused before streaming; one that lost its lease meanwhile has its
        file deleted again. Checkpoints beyond `keep_last` are deleted from storage after the
        transition committed."""
        store = self._file_store()
        job = await run_blocking(self.check_current, worker_key, attempt_id)
        self._check_step(job, step)
        key = checkpoint_key(job.id, attempt_id, step)
        size, sha256 = await store.put_stream(key, chunks, self.settings.max_upload_bytes)
        try:
            receipt, doomed = await run_blocking(
                self.checkpoint, worker_key, attempt_id, step, key, size, sha256
            )
        except StaleAttempt:
            await run_blocking(store.delete, key)
            raise
        await run_blocking(self._delete_files, doomed)
        return receipt

    @retry_conflicts
    def checkpoint(
        self, worker_key: ApiKey, attempt_id: str, step: int, key: str, size: int, sha256: str
    ) -> tuple[CheckpointReceipt, list[str]]:
        """Records the checkpoint for the attempt that owns the job, keeps the newest
        `keep_last` usable ones and returns the files of the rows it deleted. Repeating it
        (a retried request) records nothing new."""
        now = self.clock()
        with self.db.write() as conn:
            _, row = self._lock_current(conn, worker_key, attempt_id, "checkpoint")
            policy = self._require_policy(row)
            known = checkpoint_sql.job_checkpoints(conn, row.id, usable_only=False)
            repeat = next((c for c in known if c.key == key), None)
            if repeat is not None:
                checkpoint_id = repeat.id
            else:
                checkpoint_id = checkpoint_sql.insert_checkpoint(
                    conn,
                    job_id=row.id,
                    attempt_id=attempt_id,
                    step=step,
                    key=key,
                    size_bytes=size,
                    sha256=sha256,
                    now=now,
                )
            usable = checkpoint_sql.job_checkpoints(conn, row.id, usable_only=True)
            kept, dropped = usable[: policy.keep_last], usable[policy.keep_last :]
            checkpoint_sql.delete_checkpoints(conn, [c.id for c in dropped])
            if repeat is None:
                webhooks.emit(conn, row, "checkpoint", now, extra={"checkpoint": {"step": step}})
        receipt = CheckpointReceipt(
            checkpoint_id=checkpoint_id,
            step=step,
            kept_steps=[c.step for c in kept],
            deleted_steps=[c.step for c in dropped],
        )
        return receipt, [c.key for c in dropped]

    # --- resume --------------------------------------------------------------------------------

    @retry_conflicts
    def _record_resume(
        self, worker_key: ApiKey, attempt_id: str, report: ResumeReport
    ) -> list[str]:
        now = self.clock()
        doomed: list[str] = []
        with self.db.write() as conn:
            _, row = self._lock_current(conn, worker_key, attempt_id, "resume")
            self._require_policy(row)
            notes = []
            for skipped in report.skipped:
                found = checkpoint_sql.get_checkpoint(conn, skipped.checkpoint_id)
                if found is None or found.job_id != row.id:
                    continue  # pruned meanwhile, or not this job's: nothing to record
                if checkpoint_sql.mark_corrupt(conn, row.id, found.id, skipped.reason):
                    doomed.append(found.key)
                notes.append(f"checkpoint at step {found.step} passed over: {skipped.reason}")
            start = report.resumed_from_step
            notes.append(
                f"resumed from the checkpoint at step {start}"
                if start
                else "started from step 0 (no usable checkpoint)"
            )
            checkpoint_sql.record_resume(
                conn, job_id=row.id, attempt_id=attempt_id, step=start, notes=notes, now=now
            )
        return doomed

    def report_resume(self, worker_key: ApiKey, attempt_id: str, report: ResumeReport) -> None:
        """Records where the attempt starts and marks the checkpoints it found corrupt (never
        handed out again; their files are deleted), in the attempt history."""
        self._delete_files(self._record_resume(worker_key, attempt_id, report))

    def read_checkpoint(self, worker_key: ApiKey, attempt_id: str, checkpoint_id: int) -> bytes:
        """A checkpoint of the attempt's job (for workers of a fleet on the local store)."""
        row = self.check_current(worker_key, attempt_id)
        with self.db.read() as conn:
            found = checkpoint_sql.get_checkpoint(conn, checkpoint_id)
        if found is None or found.job_id != row.id:
            raise NotFound(f"job {row.id} has no checkpoint {checkpoint_id}")
        return self._file_store().read(found.key)

    def _resume_points(
        self, conn: Connection, row: job_sql.JobRow, attempt_id: str
    ) -> list[ResumeCheckpoint]:
        """What a new attempt of a checkpointing kind may resume from, newest first."""
        spec = get_kind(row.kind)
        if spec.checkpoint_policy(spec.parse(row.params)) is None:
            return []
        store = self._file_store()
        return [
            ResumeCheckpoint(
                checkpoint_id=c.id,
                step=c.step,
                url=store.presigned_get(c.key)
                or f"/v1/worker/attempts/{attempt_id}/checkpoints/{c.id}",
                sha256=c.sha256,
                size_bytes=c.size_bytes,
            )
            for c in checkpoint_sql.job_checkpoints(conn, row.id, usable_only=True)
        ]

    def training_view(self, owner: ApiKey, job_id: str) -> TrainingView:
        """The owner's view of a training job: progress, loss curve, checkpoints kept, each
        attempt's start and reach, interruptions, lease seconds and cost."""
        with self.db.read() as conn:
            row = self._readable(conn, owner, job_id)
            spec = get_kind(row.kind)
            params = spec.parse(row.params)
            policy = spec.checkpoint_policy(params)
            if policy is None:
                raise InvalidField(("path", "job_id"), f"a {row.kind} job is not a training job")
            attempts = attempt_sql.job_attempts(conn, row.id)
            facts = TrainingFacts(
                job=row,
                total_steps=policy.total_steps,
                attempts=attempts,
                points=checkpoint_sql.job_points(conn, row.id),
                resumes=checkpoint_sql.job_resumes(conn, row.id),
                checkpoints=checkpoint_sql.job_checkpoints(conn, row.id, usable_only=False),
                gpu_by_worker=worker_sql.gpu_names(conn, sorted({a.worker_id for a in attempts})),
                lease_seconds=self.settings.lease_seconds,
                model=self._trained_model(conn, row, spec.result_model(params)),
            )
        return training_view(facts, PriceTable(by_gpu=self.settings.gpu_prices), self.clock())

    @staticmethod
    def _trained_model(
        conn: Connection, row: job_sql.JobRow, result: ResultModel | None
    ) -> ModelView | None:
        """The model the succeeded job registered (found by name and its output's hash)."""
        if result is None or row.status is not JobStatus.succeeded:
            return None
        outputs = artifact_sql.job_outputs(conn, [row.id]).get(row.id, [])
        output = next((a for a in outputs if a.idx == result.output_index), None)
        if output is None:
            return None
        found = model_sql.find_model(conn, result.name, sha256=output.sha256)
        return model_view(found) if found else None

    # --- completion of a training job ----------------------------------------------------------

    def _stage_result(
        self, worker_key: ApiKey, attempt_id: str, job: job_sql.JobRow | None = None
    ) -> StagedModel | None:
        """Copies the output a succeeded job registers as a model to its own key, outside the
        completion's transaction (object storage is slow); None for kinds that register none.
        An orphan copy left by a completion that then loses its race is content-addressed and
        harmless. `job`, when the caller has just read it, spares the read for such kinds."""
        if job is not None:
            known = get_kind(job.kind)
            if known.result_model(known.parse(job.params)) is None:
                return None
        with self.db.read() as conn:
            attempt = self._attempt(conn, attempt_id, worker_key)
            job = job_sql.get_job(conn, attempt.job_id)
            assert job is not None
            spec = get_kind(job.kind)
            result = spec.result_model(spec.parse(job.params))
            if result is None or job.current_attempt_id != attempt_id:
                return None  # nothing to register, or `complete` answers (a repeat, a 409)
            uploaded = {a.idx: a.key for a in artifact_sql.attempt_artifacts(conn, attempt_id)}
        outputs = self._output_spec(job)
        key = uploaded.get(result.output_index) or output_key(
            job.id, attempt_id, result.output_index, outputs.extension(outputs.media_types[0])
        )
        store = self._file_store()
        try:
            data = store.read(key)
        except FileNotFoundError:
            return None  # completion refuses the missing output with its own message
        sha256 = hashlib.sha256(data).hexdigest()
        model_key = trained_model_key(sha256)
        asyncio.run(store.put_stream(model_key, _once(data), len(data)))
        return StagedModel(result, _source(store, model_key), sha256, len(data))

    def _finish_training(
        self, conn: Connection, row: job_sql.JobRow, staged: StagedModel | None, now: float
    ) -> list[str]:
        """In the completion's transaction: registers the staged model (its base is that of
        the job's base model) and deletes every checkpoint row; returns their files."""
        if staged is not None:
            combo = job_model_sql.combos(conn, [row.id])[row.id]
            base = next((i.model.base for i in combo if i.role is staged.spec.base_role), None)
            model_sql.register_model(
                conn,
                name=staged.spec.name,
                kind=staged.spec.kind.value,
                source=staged.source,
                sha256=staged.sha256,
                size_bytes=staged.size_bytes,
                now=now,
                base=base.value if base else None,
                format=staged.spec.format,
                trigger_words=staged.spec.trigger_words,
            )
        spec = get_kind(row.kind)
        if spec.checkpoint_policy(spec.parse(row.params)) is None:
            return []  # a kind that keeps no checkpoints has no rows to delete
        every = checkpoint_sql.job_checkpoints(conn, row.id, usable_only=False)
        checkpoint_sql.delete_checkpoints(conn, [c.id for c in every])
        return [c.key for c in every if c.corrupt_reason is None]

    # --- helpers -------------------------------------------------------------------------------

    def _require_policy(self, row: job_sql.JobRow) -> CheckpointPolicy:
        spec = get_kind(row.kind)
        policy = spec.checkpoint_policy(spec.parse(row.params))
        if policy is None:
            raise InvalidField(
                ("path", "attempt_id"), f"a {row.kind} job does not take checkpoints"
            )
        return policy

    def _check_step(self, row: job_sql.JobRow, step: int) -> None:
        policy = self._require_policy(row)
        if not 1 <= step < policy.total_steps:
            raise InvalidField(
                ("path", "step"),
                f"a checkpoint of this job is at a step from 1 to {policy.total_steps - 1} "
                f"(the final step's result is the output), not {step}",
            )

    def _delete_files(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self._file_store().delete_many(keys)
        except Exception as exc:  # the rows are gone; a leftover file costs storage only
            log.warning("could not delete %d checkpoint files: %s", len(keys), exc)


def sweep_final_checkpoints(db: Database, store: ArtifactStore, batch_size: int = 500) -> int:
    """Deletes the checkpoints of jobs that ended without completing (failed, cancelled): no
    attempt will resume them. Files first, then rows, as retention does: a pass that fails
    half-way leaves rows whose files the next pass deletes again, harmlessly."""
    with db.write() as conn:
        found = checkpoint_sql.final_job_checkpoints(conn, batch_size)
        if found:
            store.delete_many([key for _, key in found])
            checkpoint_sql.delete_checkpoints(conn, [checkpoint_id for checkpoint_id, _ in found])
    if found:
        log.info("deleted %d checkpoints of finished jobs", len(found))
    return len(found)


def _source(store: ArtifactStore, key: str) -> str:
    """A model source workers can fetch the stored file from (see worker/sources.py)."""
    if isinstance(store, LocalArtifactStore):
        return str(store.path(key))
    if isinstance(store, S3ArtifactStore):
        return f"s3://{store.config.bucket}/{store.s3_key(key)}"
    raise RuntimeError(f"cannot name a model source in a {type(store).__name__}")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
