"""The worker protocol: claim (long poll), heartbeat, upload, complete, fail."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from imagefleet.artifacts.base import ArtifactTooLarge
from imagefleet.orchestrator.auth import worker_key
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.protocol import (
    AttemptOutcome,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    UploadedArtifact,
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
        if assignment is not None or remaining <= 0 or await request.is_disconnected():
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
    if not 0 <= index < 64:
        raise HTTPException(422, f"output index must be within 0..63, got {index}")
    job = await run_in_threadpool(lifecycle.check_current, key, attempt_id)
    artifact_key = f"jobs/{job.id}/{attempt_id}/{index}.png"
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
    return _lifecycle(request).complete(key, attempt_id, body)


@router.post("/attempts/{attempt_id}/fail", response_model=AttemptOutcome)
async def fail(request: Request, key: Key, attempt_id: str, body: FailRequest) -> AttemptOutcome:
    outcome = await run_in_threadpool(_lifecycle(request).fail, key, attempt_id, body)
    if outcome.job_status == "queued":
        request.app.state.work_signal.notify()
    return outcome
