"""The worker protocol: claim (long poll), heartbeat, upload, complete, fail."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from imagefleet.artifacts.base import (
    ArtifactStore,
    ArtifactTooLarge,
    ArtifactUploadRejected,
    verify_direct_upload,
)
from imagefleet.orchestrator.auth import worker_key
from imagefleet.orchestrator.errors import InvalidField
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.protocol import (
    Assignment,
    AttemptOutcome,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    MultipartFinish,
    MultipartPart,
    MultipartStart,
    MultipartUpload,
    UploadedArtifact,
    UploadTarget,
)
from imagefleet.store.keys import ApiKey

router = APIRouter(prefix="/v1/worker", tags=["worker"])
QUARANTINED_RETRY_SECONDS = 60.0
Key = Annotated[ApiKey, Depends(worker_key)]
UPLOAD_TYPES = ("image/png",)


def _lifecycle(request: Request) -> JobLifecycle:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    return lifecycle


@router.post("/claim", response_model=ClaimResponse, summary="Claim a job (long poll)")
async def claim(request: Request, key: Key, body: ClaimRequest) -> ClaimResponse:
    lifecycle = _lifecycle(request)
    signal = request.app.state.work_signal
    recheck = request.app.state.claim_recheck_seconds
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
        remaining = deadline - time.monotonic()
        if assignment is not None:
            return ClaimResponse(assignment=_with_upload_targets(request, assignment))
        if remaining <= 0 or await request.is_disconnected():
            return ClaimResponse(
                assignment=assignment, retry_after_seconds=0.0 if assignment else 1.0
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout=min(remaining, recheck))


@router.post("/attempts/{attempt_id}/heartbeat", response_model=HeartbeatResponse)
def heartbeat(
    request: Request, key: Key, attempt_id: str, body: HeartbeatRequest
) -> HeartbeatResponse:
    return _lifecycle(request).heartbeat(key, attempt_id, body)


@router.put(
    "/attempts/{attempt_id}/outputs/{index}",
    response_model=UploadedArtifact,
    summary="Upload one output file (raw body)",
)
async def upload_output(
    request: Request, key: Key, attempt_id: str, index: int
) -> UploadedArtifact:
    lifecycle = _lifecycle(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in UPLOAD_TYPES:
        raise HTTPException(
            415, f"content-type must be one of {UPLOAD_TYPES}, got {content_type!r}"
        )
    _check_index(index)
    job = await run_in_threadpool(lifecycle.check_current, key, attempt_id)
    artifact_key = output_key(job.id, attempt_id, index)
    limit = lifecycle.settings.max_upload_bytes
    try:
        size, sha256 = await request.app.state.artifacts.put_stream(
            artifact_key, request.stream(), limit
        )
    except ArtifactTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    await run_in_threadpool(
        lambda: lifecycle.record_upload(
            key,
            attempt_id,
            index=index,
            key=artifact_key,
            size=size,
            sha256=sha256,
            content_type=content_type,
        )
    )
    return UploadedArtifact(key=artifact_key, size_bytes=size, sha256=sha256)


@router.post("/attempts/{attempt_id}/complete", response_model=AttemptOutcome)
def complete(request: Request, key: Key, attempt_id: str, body: CompleteRequest) -> AttemptOutcome:
    """Accepts the result. Files the worker put straight into the store are checked there
    (present, within the size limit) and recorded before the job is marked succeeded."""
    lifecycle = _lifecycle(request)
    if request.app.state.direct_uploads:
        job = lifecycle.check_current(key, attempt_id)
        for output in body.outputs:
            _record_direct_upload(request, key, job.id, attempt_id, output.index, output.sha256)
    return lifecycle.complete(key, attempt_id, body)


def _check_index(index: int) -> None:
    if not 0 <= index < 64:
        raise InvalidField(("path", "index"), f"output index must be within 0..63, got {index}")


def output_key(job_id: str, attempt_id: str, index: int) -> str:
    """Where output `index` of an attempt lives: attempts never overwrite each other."""
    return f"jobs/{job_id}/{attempt_id}/{index}.png"


def _with_upload_targets(request: Request, assignment: Assignment) -> Assignment:
    """Adds presigned PUT URLs when the store takes uploads directly (S3-compatible)."""
    store: ArtifactStore = request.app.state.artifacts
    settings = _lifecycle(request).settings
    targets = []
    for index in range(assignment.params.num_images):
        url = store.presigned_put(
            output_key(assignment.job_id, assignment.attempt_id, index),
            UPLOAD_TYPES[0],
            settings.max_upload_bytes,
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


def _record_direct_upload(
    request: Request, key: ApiKey, job_id: str, attempt_id: str, index: int, sha256: str | None
) -> UploadedArtifact | None:
    """Records a file found in the store under the output's key; None when it is not there
    (the file may have come through the API instead, which recorded it already)."""
    lifecycle = _lifecycle(request)
    artifact_key = output_key(job_id, attempt_id, index)
    try:
        info = verify_direct_upload(
            request.app.state.artifacts, artifact_key, lifecycle.settings.max_upload_bytes
        )
    except FileNotFoundError:
        return None
    except ArtifactTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    digest = sha256 or ""
    lifecycle.record_upload(
        key,
        attempt_id,
        index=index,
        key=artifact_key,
        size=info.size_bytes,
        sha256=digest,
        content_type=UPLOAD_TYPES[0],
    )
    return UploadedArtifact(key=artifact_key, size_bytes=info.size_bytes, sha256=digest)


@router.post(
    "/attempts/{attempt_id}/outputs/{index}/multipart",
    response_model=MultipartUpload,
    summary="Start a direct multipart upload of a big output (S3-compatible stores)",
)
def start_multipart(
    request: Request, key: Key, attempt_id: str, index: int, body: MultipartStart
) -> MultipartUpload:
    lifecycle = _lifecycle(request)
    _check_index(index)
    if body.content_type not in UPLOAD_TYPES:
        raise HTTPException(415, f"content_type must be one of {UPLOAD_TYPES}")
    if body.size_bytes > lifecycle.settings.max_upload_bytes:
        raise HTTPException(
            413,
            f"{body.size_bytes} bytes is over the limit of {lifecycle.settings.max_upload_bytes}",
        )
    job = lifecycle.check_current(key, attempt_id)
    store: ArtifactStore = request.app.state.artifacts
    plan = store.start_multipart(
        output_key(job.id, attempt_id, index), body.size_bytes, body.content_type
    )
    if plan is None:
        raise HTTPException(
            400,
            "this orchestrator keeps artifacts locally: upload with "
            f"PUT /v1/worker/attempts/{attempt_id}/outputs/{index} instead",
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
    request: Request, key: Key, attempt_id: str, index: int, body: MultipartFinish
) -> UploadedArtifact:
    lifecycle = _lifecycle(request)
    _check_index(index)
    job = lifecycle.check_current(key, attempt_id)
    store: ArtifactStore = request.app.state.artifacts
    artifact_key = output_key(job.id, attempt_id, index)
    try:
        store.finish_multipart(
            artifact_key, body.upload_id, [(p.part_number, p.etag) for p in body.parts]
        )
    except ArtifactUploadRejected as exc:
        raise InvalidField(("body", "parts"), str(exc)) from exc
    recorded = _record_direct_upload(request, key, job.id, attempt_id, index, None)
    if recorded is None:
        raise InvalidField(
            ("body", "parts"), f"the multipart upload of output {index} left no file"
        )
    return recorded


@router.post("/attempts/{attempt_id}/fail", response_model=AttemptOutcome)
async def fail(request: Request, key: Key, attempt_id: str, body: FailRequest) -> AttemptOutcome:
    outcome = await run_in_threadpool(_lifecycle(request).fail, key, attempt_id, body)
    if outcome.job_status == "queued":
        request.app.state.work_signal.notify()
    return outcome
