"""Training checkpoints put straight into an S3-compatible store by the worker, through a
presigned URL, instead of streamed through the API: a checkpoint of a real LoRA run (the
adapters plus AdamW's two moments) is tens of megabytes every `checkpoint_every` steps, from
every training worker, and the API need not carry it.

1. `checkpoint_upload_target`: the attempt (fenced: it must own the job) asks for a presigned
   PUT URL for `checkpoint_key(job, attempt, step)`; null with the local store.
2. The worker PUTs the archive there.
3. `record_stored_checkpoint`: the orchestrator HEADs the object (it must exist, be within
   `max_upload_bytes` and have the size the worker reports, else it is deleted and refused),
   then runs the same `checkpoint` transition as an upload through the API: locked, fenced,
   keep_last, webhook. A stale attempt's object is deleted again (unless a checkpoint row
   already names it: a retried report of a checkpoint recorded in time).

The sha256 is the worker's word: re-reading every checkpoint to hash it would bring the bytes
back through the orchestrator. It is checked end to end instead, where it matters: a resuming
worker hashes each checkpoint it downloads and passes over one that does not match.
"""

from __future__ import annotations

from imagefleet.artifacts.base import verify_direct_upload
from imagefleet.blocking import run_blocking
from imagefleet.checkpoint_protocol import CheckpointUploadTarget, StoredCheckpoint
from imagefleet.errors import InvalidField, StaleAttempt
from imagefleet.orchestrator.checkpoint_transitions import (
    CHECKPOINT_MEDIA_TYPE,
    CheckpointTransitions,
    checkpoint_key,
)
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import checkpoints as checkpoint_sql
from imagefleet.store.keys import ApiKey
from imagefleet.training_protocol import CheckpointReceipt


class DirectCheckpoints(CheckpointTransitions):
    def checkpoint_upload_target(
        self, worker_key: ApiKey, attempt_id: str, step: int
    ) -> CheckpointUploadTarget:
        """A presigned PUT URL for the attempt's checkpoint at `step` (null: use the API)."""
        job = self.check_current(worker_key, attempt_id)
        self._check_step(job, step)
        url = self._file_store().presigned_put(
            checkpoint_key(job.id, attempt_id, step),
            CHECKPOINT_MEDIA_TYPE,
            self.settings.max_upload_bytes,
        )
        return CheckpointUploadTarget(url=url)

    async def record_stored_checkpoint(
        self, worker_key: ApiKey, attempt_id: str, step: int, stored: StoredCheckpoint
    ) -> CheckpointReceipt:
        """Checks the object the worker put and runs the `checkpoint` transition for it."""
        store = self._file_store()
        try:
            job = await run_blocking(self.check_current, worker_key, attempt_id)
        except StaleAttempt:
            await run_blocking(self._drop_unrecorded, attempt_id, step)
            raise
        self._check_step(job, step)
        key = checkpoint_key(job.id, attempt_id, step)
        try:  # ArtifactTooLarge (the object is deleted) is the route's 413
            info = await run_blocking(
                verify_direct_upload, store, key, self.settings.max_upload_bytes
            )
        except FileNotFoundError as exc:
            raise InvalidField(("path", "step"), str(exc)) from exc
        if info.size_bytes != stored.size_bytes:
            await run_blocking(store.delete, key)
            raise InvalidField(
                ("body", "size_bytes"),
                f"the stored checkpoint is {info.size_bytes} bytes, not the {stored.size_bytes} "
                "reported: the upload was cut short or replaced; it was deleted, upload it again",
            )
        try:
            receipt, doomed = await run_blocking(
                self.checkpoint, worker_key, attempt_id, step, key, info.size_bytes, stored.sha256
            )
        except StaleAttempt:
            await run_blocking(self._drop_unrecorded, attempt_id, step)
            raise
        await run_blocking(self._delete_files, doomed)
        return receipt

    def _drop_unrecorded(self, attempt_id: str, step: int) -> None:
        """Deletes what a stale attempt put for `step`, unless a checkpoint row already names
        that file (a retried report of a checkpoint recorded while the attempt still owned the
        job: the next attempt may resume from it)."""
        with self.db.read() as conn:
            attempt = attempt_sql.get_attempt(conn, attempt_id)
            if attempt is None:
                return
            key = checkpoint_key(attempt.job_id, attempt_id, step)
            known = checkpoint_sql.job_checkpoints(conn, attempt.job_id, usable_only=False)
        if all(c.key != key for c in known):
            self._delete_files([key])
