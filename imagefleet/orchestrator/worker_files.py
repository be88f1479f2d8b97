"""Worker transitions about files: output uploads (through the API, or straight into an
S3-compatible store, in one piece or in parts) and the job's input files. Every write checks,
under the job's row lock, that the attempt still owns the job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from imagefleet.artifacts.base import (
    ArtifactUploadRejected,
    MultipartPlan,
    verify_direct_upload,
)
from imagefleet.blocking import run_blocking
from imagefleet.errors import (
    BadRequest,
    InvalidField,
    NotFound,
    PayloadTooLarge,
    StaleAttempt,
    UnsupportedMediaType,
)
from imagefleet.kinds import OutputSpec, get_kind
from imagefleet.orchestrator.transitions import TransitionBase, stale_reason
from imagefleet.store import artifacts as artifact_sql
from imagefleet.store import inputs as input_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import CompleteRequest, UploadTarget


def output_key(job_id: str, attempt_id: str, index: int, extension: str = "png") -> str:
    """Where output `index` of an attempt lives: attempts never overwrite each other."""
    return f"jobs/{job_id}/{attempt_id}/{index}.{extension}"


@dataclass(frozen=True)
class StoredFile:
    """An output file an attempt put into the store, to be recorded for it."""

    index: int
    key: str
    size: int
    sha256: str
    content_type: str | None = None  # None: the kind's first output type


class WorkerFiles(TransitionBase):
    def _output_spec(self, row: job_sql.JobRow) -> OutputSpec:
        spec = get_kind(row.kind)
        return spec.outputs(spec.parse(row.params))

    def read_input(self, worker_key: ApiKey, attempt_id: str, name: str) -> tuple[bytes, str]:
        """An input of the attempt's job (for workers of a fleet on the local store)."""
        row = self.check_current(worker_key, attempt_id)
        with self.db.read() as conn:
            found = input_sql.job_input_rows(conn, row.id).get(name)
        if found is None:
            raise NotFound(f"job {row.id} has no input {name!r}")
        return self._file_store().read(found.key), found.content_type

    def check_current(self, worker_key: ApiKey, attempt_id: str) -> job_sql.JobRow:
        """The job this attempt owns (a read); StaleAttempt when it owns nothing any more."""
        with self.db.read() as conn:
            row = self._attempt_job(conn, worker_key, attempt_id, lock=False)
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
        store = self._file_store()
        job = await run_blocking(self.check_current, worker_key, attempt_id)
        key = self._checked_output_key(job, attempt_id, index, content_type)
        size, sha256 = await store.put_stream(key, chunks, self.settings.max_upload_bytes)
        await run_blocking(
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
            row = self._attempt_job(conn, worker_key, attempt_id)
            if row.current_attempt_id != attempt_id:
                raise StaleAttempt(stale_reason(attempt_id, row, "upload for"))
            self._record(
                conn, row.id, attempt_id, StoredFile(index, key, size, sha256), content_type
            )

    def _direct_uploads(
        self, worker_key: ApiKey, attempt_id: str, request: CompleteRequest
    ) -> list[StoredFile]:
        """Outputs the worker put straight into an S3-compatible store, checked there; empty
        when the store takes uploads through the API (those were recorded as they came)."""
        store = self.artifacts
        if store.direct_multipart_threshold is None:
            return []
        job = self.check_current(worker_key, attempt_id)
        spec = self._output_spec(job)
        extension = spec.extension(spec.media_types[0])
        found = []
        for output in request.outputs:
            key = output_key(job.id, attempt_id, output.index, extension)
            try:
                info = verify_direct_upload(store, key, self.settings.max_upload_bytes)
            except FileNotFoundError:
                continue  # it came through the API instead, which recorded it already
            except ValueError as exc:  # ArtifactTooLarge
                raise PayloadTooLarge(str(exc)) from exc
            found.append(StoredFile(output.index, key, info.size_bytes, output.sha256 or ""))
        return found

    def _record(
        self, conn: Connection, job_id: str, attempt_id: str, upload: StoredFile, content_type: str
    ) -> None:
        values = self._artifact_values(job_id, attempt_id, upload, content_type)
        artifact_sql.record_artifact(conn, **values)

    def _upload_targets(self, row: job_sql.JobRow, attempt_id: str) -> list[UploadTarget]:
        """Where the worker puts each output straight into the store (presigned URLs), or
        nothing when the store cannot take direct uploads (the worker then sends them here)."""
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
                return []
            targets.append(
                UploadTarget(
                    index=index,
                    url=url,
                    content_type=media_type,
                    multipart_threshold_bytes=store.direct_multipart_threshold or 0,
                )
            )
        return targets

    def _artifact_values(
        self, job_id: str, attempt_id: str, upload: StoredFile, default_type: str
    ) -> dict[str, Any]:
        """The artifacts row of a stored file (its own content type, else `default_type`)."""
        return dict(
            key=upload.key,
            job_id=job_id,
            attempt_id=attempt_id,
            idx=upload.index,
            content_type=upload.content_type or default_type,
            size_bytes=upload.size,
            sha256=upload.sha256,
            created_at=self.clock(),
        )

    def start_multipart(
        self, worker_key: ApiKey, attempt_id: str, index: int, size_bytes: int, content_type: str
    ) -> MultipartPlan:
        """Plans a direct upload of a big output in parts (S3-compatible stores only)."""
        job = self.check_current(worker_key, attempt_id)
        key = self._checked_output_key(job, attempt_id, index, content_type)
        limit = self.settings.max_upload_bytes
        if size_bytes > limit:
            raise PayloadTooLarge(f"{size_bytes} bytes is over the limit of {limit}")
        plan = self._file_store().start_multipart(key, size_bytes, content_type)
        if plan is None:
            raise BadRequest(
                "this orchestrator keeps artifacts locally: upload with "
                f"PUT /v1/worker/attempts/{attempt_id}/outputs/{index} instead"
            )
        return plan

    def finish_multipart(
        self,
        worker_key: ApiKey,
        attempt_id: str,
        index: int,
        upload_id: str,
        parts: list[tuple[int, str]],
    ) -> tuple[str, int]:
        """Assembles the parts in the store; returns the key and size. The file is recorded,
        like every direct upload, when the attempt completes."""
        job = self.check_current(worker_key, attempt_id)
        outputs = self._output_spec(job)
        key = output_key(job.id, attempt_id, index, outputs.extension(outputs.media_types[0]))
        store = self._file_store()
        try:
            store.finish_multipart(key, upload_id, parts)
        except ArtifactUploadRejected as exc:
            raise InvalidField(("body", "parts"), str(exc)) from exc
        info = store.head(key)
        if info is None:
            raise InvalidField(
                ("body", "parts"), f"the multipart upload of output {index} left no file"
            )
        return key, info.size_bytes

    def _checked_output_key(
        self, job: job_sql.JobRow, attempt_id: str, index: int, content_type: str
    ) -> str:
        outputs = self._output_spec(job)
        if content_type not in outputs.media_types:
            raise UnsupportedMediaType(
                f"a {job.kind} job's outputs are {', '.join(outputs.media_types)}, "
                f"not {content_type!r}"
            )
        if not 0 <= index < outputs.count:
            raise InvalidField(
                ("path", "index"),
                f"a {job.kind} job has outputs 0..{outputs.count - 1}, not {index}",
            )
        return output_key(job.id, attempt_id, index, outputs.extension(content_type))
