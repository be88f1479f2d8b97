"""Batched worker calls: several leases renewed in one heartbeat, and small outputs uploaded
and the attempt completed in one call. Each attempt keeps its own lease, fencing and outputs;
batching only saves requests and transactions."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from sqlalchemy import Connection

from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField, NotFound, StaleAttempt
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.orchestrator.worker_files import StoredFile
from imagefleet.orchestrator.worker_transitions import WorkerTransitions
from imagefleet.protocol import AttemptOutcome
from imagefleet.store import attempts as attempt_sql
from imagefleet.store import folded as folded_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import (
    AttemptHeartbeat,
    AttemptHeartbeatResult,
    AttemptResult,
    CompletedOutput,
    CompleteRequest,
    InlineCompleteRequest,
)


class WorkerBatches(WorkerTransitions):
    @retry_conflicts
    def heartbeat_many(
        self, worker_key: ApiKey, beats: list[AttemptHeartbeat]
    ) -> list[AttemptHeartbeatResult]:
        """`heartbeat` for several attempts in one transaction (a read and an UPDATE each when
        all is well); an attempt that is not this key's or lost its lease answers `lost` instead of
        failing the batch. Attempts are renewed in id order, so two batches sharing attempts
        lock their jobs in the same order."""
        now = self.clock()
        results: dict[str, AttemptHeartbeatResult] = {}
        with self.db.write() as conn:
            for beat in sorted(beats, key=lambda b: b.attempt_id):
                results[beat.attempt_id] = self._beat_one(conn, worker_key, beat, now)
        return [results[beat.attempt_id] for beat in beats]

    def _beat_one(
        self, conn: Connection, worker_key: ApiKey, beat_in: AttemptHeartbeat, now: float
    ) -> AttemptHeartbeatResult:
        """One attempt of the batch, as `heartbeat` does it (progress events included)."""
        attempt_id = beat_in.attempt_id
        expires = now + self.settings.lease_seconds
        beat = folded_sql.beat(
            conn,
            attempt_id,
            worker_key.id,
            step=beat_in.step,
            total=beat_in.total_steps,
            lease_expires_at=expires,
            now=now,
        )
        if beat is None:
            reason = f"no attempt {attempt_id!r} for this worker key"
            return AttemptHeartbeatResult(attempt_id=attempt_id, action="lost", reason=reason)
        if beat.renewed:
            return AttemptHeartbeatResult(
                attempt_id=attempt_id, action="continue", lease_expires_at=to_datetime(expires)
            )
        attempt = attempt_sql.get_attempt(conn, attempt_id)
        if attempt is not None and attempt.outcome is AttemptOutcome.cancelled:
            return AttemptHeartbeatResult(
                attempt_id=attempt_id, action="cancel", reason="the client cancelled the job"
            )
        reason = f"attempt {attempt_id} no longer holds the lease on job {beat.facts.job_id}"
        return AttemptHeartbeatResult(attempt_id=attempt_id, action="lost", reason=reason)

    async def complete_inline(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        request: InlineCompleteRequest,
        signal: WorkSignal | None = None,
    ) -> AttemptResult:
        """Stores the outputs sent in the request, then completes the attempt exactly as
        `complete` does, recording the files in the completing transaction: one request
        instead of an upload per output plus a complete.

        The files are named after the job, so it must be known first. For an attempt this
        replica handed out (`claimed_here`, the common case) it is, and the completion is one
        transaction: a stale attempt's files are stored, then deleted when the completion
        refuses it. Otherwise an ownership read comes first, which keeps a stale attempt from
        storing anything. `next` and `signal`: as `complete` takes them."""
        job = self.claimed_here(worker_key, attempt_id)
        if job is None:
            try:
                job = await run_blocking(self.check_current, worker_key, attempt_id)
            except StaleAttempt:
                # A repeat of a completion that succeeded gets the same answer; any other 409.
                return await run_blocking(
                    self._complete_stored, worker_key, attempt_id, _plain(request), [], None, signal
                )
        store = self._file_store()
        stored = []
        for position, output in enumerate(request.outputs):
            try:
                data = base64.b64decode(output.data_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidField(
                    ("body", "outputs", position, "data_base64"), "not valid base64"
                ) from exc
            key = self._checked_output_key(job, attempt_id, output.index, output.content_type)
            size, sha256 = await store.put_stream(
                key, _one_chunk(data), self.settings.max_upload_bytes
            )
            stored.append(StoredFile(output.index, key, size, sha256, output.content_type))
        try:
            return await run_blocking(
                self._complete_stored, worker_key, attempt_id, _plain(request), stored, job, signal
            )
        except (StaleAttempt, NotFound):
            # Nothing refers to them: the refused completion recorded nothing.
            await run_blocking(self._delete_files, [file.key for file in stored])
            raise


def _plain(request: InlineCompleteRequest) -> CompleteRequest:
    outputs = [
        CompletedOutput(index=o.index, seed=o.seed, width=o.width, height=o.height)
        for o in request.outputs
    ]
    return CompleteRequest(outputs=outputs, timings=request.timings, next=request.next)


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data
