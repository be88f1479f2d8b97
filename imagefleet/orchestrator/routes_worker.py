"""The worker protocol: claim (long poll), heartbeat, upload, complete, fail. Each route
translates one request into one lifecycle call."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from imagefleet.artifacts.base import ArtifactTooLarge, ArtifactUploadRejected
from imagefleet.errors import BadRequest, InvalidField, PayloadTooLarge, UnsupportedMediaType
from imagefleet.orchestrator.deps import Artifacts, Lifecycle, Signal, WorkerKey
from imagefleet.orchestrator.lifecycle import JobLifecycle, output_key
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.protocol import (
    Assignment,
    AttemptResult,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobStatus,
    MultipartFinish,
    MultipartPart,
    MultipartStart,
    MultipartUpload,
    UploadedArtifact,
    UploadTarget,
)

router = APIRouter(prefix="/v1/worker", tags=["worker"])
QUARANTINED_RETRY_SECONDS = 60.0
UPLOAD_TYPES = ("image/png",)


@router.post("/claim", response_model=ClaimResponse, summary="Claim a job (long poll)")
async def claim(
    request: Request,
    key: WorkerKey,
    body: ClaimRequest,
    lifecycle: Lifecycle,
    signal: Signal,
    store: Artifacts,
) -> ClaimResponse:
    wait = min(body.wait_seconds, lifecycle.settings.claim_wait_max_seconds)
    deadline = time.monotonic() + wait
    while True:
        waiter = signal.waiter()
        try:
            assignment = await run_in_threadpool(lifecycle.claim, key, body)
        except NodeQuarantined as exc:
            return ClaimResponse(
                quarantined=str(exc), retry_after_seconds=QUARANTINED_RETRY_SECONDS
            )
        if assignment is not None:
            return ClaimResponse(assignment=_with_upload_targets(lifecycle, store, assignment))
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await request.is_disconnected():
            return ClaimResponse(retry_after_seconds=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout=min(remaining, signal.recheck_seconds))


@router.post("/attempts/{attempt_id}/heartbeat", response_model=HeartbeatResponse)
def heartbeat(
    key: WorkerKey, attempt_id: str, body: HeartbeatRequest, lifecycle: Lifecycle
) -> HeartbeatResponse:
    return lifecycle.heartbeat(key, attempt_id, body)


@router.put(
    "/attempts/{attempt_id}/outputs/{index}",
    response_model=UploadedArtifact,
    summary="Upload one output file (raw body)",
)
async def upload_output(
    request: Request, key: WorkerKey, attempt_id: str, index: int, lifecycle: Lifecycle
) -> UploadedArtifact:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in UPLOAD_TYPES:
        raise UnsupportedMediaType(
            f"content-type must be one of {UPLOAD_TYPES}, got {content_type!r}"
        )
    _check_index(index)
    try:
        row = await lifecycle.upload_output(key, attempt_id, index, content_type, request.stream())
    except ArtifactTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    return UploadedArtifact(key=row.key, size_bytes=row.size_bytes, sha256=row.sha256)


@router.post("/attempts/{attempt_id}/complete", response_model=AttemptResult)
def complete(
    key: WorkerKey, attempt_id: str, body: CompleteRequest, lifecycle: Lifecycle
) -> AttemptResult:
    """Accepts the result, once. Files the worker put straight into the store are checked
    there (present, within the size limit) before the job is marked succeeded."""
    return lifecycle.complete(key, attempt_id, body)


@router.post("/attempts/{attempt_id}/fail", response_model=AttemptResult)
async def fail(
    key: WorkerKey, attempt_id: str, body: FailRequest, lifecycle: Lifecycle, signal: Signal
) -> AttemptResult:
    outcome = await run_in_threadpool(lifecycle.fail, key, attempt_id, body)
    if outcome.job_status is JobStatus.queued:
        signal.notify()
    return outcome


@router.post(
    "/attempts/{attempt_id}/outputs/{index}/multipart",
    response_model=MultipartUpload,
    summary="Start a direct multipart upload of a big output (S3-compatible stores)",
)
def start_multipart(
    key: WorkerKey,
    attempt_id: str,
    index: int,
    body: MultipartStart,
    lifecycle: Lifecycle,
    store: Artifacts,
) -> MultipartUpload:
    _check_index(index)
    if body.content_type not in UPLOAD_TYPES:
        raise UnsupportedMediaType(f"content_type must be one of {UPLOAD_TYPES}")
    limit = lifecycle.settings.max_upload_bytes
    if body.size_bytes > limit:
        raise PayloadTooLarge(f"{body.size_bytes} bytes is over the limit of {limit}")
    job = lifecycle.check_current(key, attempt_id)
    plan = store.start_multipart(
        output_key(job.id, attempt_id, index), body.size_bytes, body.content_type
    )
    if plan is None:
        raise BadRequest(
            "this orchestrator keeps artifacts locally: upload with "
            f"PUT /v1/worker/attempts/{attempt_id}/outputs/{index} instead"
        )
    return MultipartUpload(
        upload_id=plan.upload_id,
        part_size=plan.part_size,
        parts=[
            MultipartPart(part_number=p.part_number, url=p.url, size_bytes=p.size_bytes)
            for p in plan.parts
        ],
    )


@router.post(
    "/attempts/{attempt_id}/outputs/{index}/multipart/complete",
    response_model=UploadedArtifact,
    summary="Finish a direct multipart upload",
)
def finish_multipart(
    key: WorkerKey,
    attempt_id: str,
    index: int,
    body: MultipartFinish,
    lifecycle: Lifecycle,
    store: Artifacts,
) -> UploadedArtifact:
    """Assembles the parts in the store. The file is recorded, like every direct upload, when
    the attempt completes."""
    _check_index(index)
    job = lifecycle.check_current(key, attempt_id)
    artifact_key = output_key(job.id, attempt_id, index)
    try:
        store.finish_multipart(
            artifact_key, body.upload_id, [(p.part_number, p.etag) for p in body.parts]
        )
    except ArtifactUploadRejected as exc:
        raise InvalidField(("body", "parts"), str(exc)) from exc
    info = store.head(artifact_key)
    if info is None:
        raise InvalidField(
            ("body", "parts"), f"the multipart upload of output {index} left no file"
        )
    return UploadedArtifact(key=artifact_key, size_bytes=info.size_bytes, sha256="")


def _check_index(index: int) -> None:
    if not 0 <= index < 64:
        raise InvalidField(("path", "index"), f"output index must be within 0..63, got {index}")


def _with_upload_targets(
    lifecycle: JobLifecycle, store: Artifacts, assignment: Assignment
) -> Assignment:
    """Adds presigned PUT URLs when the store takes uploads directly (S3-compatible)."""
    targets = []
    for index in range(assignment.params.num_images):
        url = store.presigned_put(
            output_key(assignment.job_id, assignment.attempt_id, index),
            UPLOAD_TYPES[0],
            lifecycle.settings.max_upload_bytes,
        )
        if url is None:
            return assignment
        targets.append(
            UploadTarget(
                index=index,
                url=url,
                content_type=UPLOAD_TYPES[0],
                multipart_threshold_bytes=store.direct_multipart_threshold or 0,
            )
        )
    return assignment.model_copy(update={"uploads": targets})
