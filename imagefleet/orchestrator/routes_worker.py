"""The worker protocol: claim (long poll), heartbeat, upload, complete, fail. Each route
translates one request into one lifecycle call."""

from __future__ import annotations

import random
import time

from fastapi import APIRouter, Request, Response

from imagefleet.artifacts.base import ArtifactTooLarge
from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField, PayloadTooLarge
from imagefleet.orchestrator.claim_answers import WorkerDraining, claim_answer
from imagefleet.orchestrator.deps import Lifecycle, Signal, WorkerKey
from imagefleet.orchestrator.empty_looks import profile_of
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.protocol import JobStatus
from imagefleet.worker_protocol import (
    AttemptResult,
    BatchHeartbeatRequest,
    BatchHeartbeatResponse,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    InlineCompleteRequest,
    MultipartFinish,
    MultipartPart,
    MultipartStart,
    MultipartUpload,
    UploadedArtifact,
)

router = APIRouter(prefix="/v1/worker", tags=["worker"], route_class=DocumentedRoute)
# A long poll and its safety-net re-checks end up to this fraction early, at random.
POLL_JITTER = 0.25
UPLOAD_TYPES = ("image/png",)


@router.post("/claim", response_model=ClaimResponse, summary="Claim a job (long poll)")
async def claim(
    request: Request,
    key: WorkerKey,
    body: ClaimRequest,
    lifecycle: Lifecycle,
    signal: Signal,
) -> ClaimResponse:
    # Jittered: a fleet that went idle together (after a burst) would otherwise end its long
    # polls, and re-check the queue, all at the same instants, in bursts that delay the claim
    # of a job arriving then.
    wait = min(body.wait_seconds, lifecycle.settings.claim_wait_max_seconds)
    deadline = time.monotonic() + wait * random.uniform(1 - POLL_JITTER, 1.0)
    profile = profile_of(body)
    woken = False  # a look after a wake-up skips the claim's read-only check: work came
    woken_for: str | None = None  # the job it came for, when the announcement named it
    while True:
        waiter = signal.waiter(profile)
        looks_again = False  # see WorkSignal: an unused wake-up is passed on
        try:
            taken = []
            try:
                taken = await run_blocking(
                    lifecycle.claim_batch, key, body, woken, signal.empty_looks, woken_for
                )
            except (NodeQuarantined, WorkerDraining) as exc:
                return claim_answer([], exc)
            finally:
                if woken_for is not None and all(a.job_id != woken_for for a in taken):
                    signal.empty_looks.woke_for(woken_for, False)  # news again for others
            if taken:
                return claim_answer(taken)
            if waiter.woken:
                # Work was announced while it looked, maybe the job that look went by as one a
                # woken claim is taking (this one): look again at once, even past the deadline.
                woken, woken_for = True, waiter.hint.job_id if waiter.hint is not None else None
                looks_again = True
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or await request.is_disconnected():
                return ClaimResponse(retry_after_seconds=1.0)
            safety_net = signal.wait_seconds * random.uniform(1 - POLL_JITTER, 1.0)
            woken = await signal.wait(waiter, min(remaining, safety_net))
            woken_for = waiter.hint.job_id if woken and waiter.hint is not None else None
            looks_again = True
        finally:
            signal.release(waiter, pass_on=not looks_again)


@router.post("/attempts/{attempt_id}/heartbeat", response_model=HeartbeatResponse)
def heartbeat(
    key: WorkerKey, attempt_id: str, body: HeartbeatRequest, lifecycle: Lifecycle
) -> HeartbeatResponse:
    return lifecycle.heartbeat(key, attempt_id, body)


@router.post(
    "/heartbeats",
    response_model=BatchHeartbeatResponse,
    summary="Renew the leases of several attempts at once (micro-batches)",
)
def heartbeat_many(
    key: WorkerKey, body: BatchHeartbeatRequest, lifecycle: Lifecycle
) -> BatchHeartbeatResponse:
    """One transaction for all; each attempt answers for itself (`lost` instead of a 404 or
    409 for the whole batch)."""
    return BatchHeartbeatResponse(results=lifecycle.heartbeat_many(key, body.attempts))


@router.put(
    "/attempts/{attempt_id}/outputs/{index}",
    response_model=UploadedArtifact,
    summary="Upload one output file (raw body)",
    responses=error_responses(415, 422),
)
async def upload_output(
    request: Request, key: WorkerKey, attempt_id: str, index: int, lifecycle: Lifecycle
) -> UploadedArtifact:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    _check_index(index)
    try:
        row = await lifecycle.upload_output(key, attempt_id, index, content_type, request.stream())
    except ArtifactTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    return UploadedArtifact(key=row.key, size_bytes=row.size_bytes, sha256=row.sha256)


@router.get(
    "/attempts/{attempt_id}/inputs/{name}",
    summary="Download an input of the attempt's job (init image, mask)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
)
def download_input(key: WorkerKey, attempt_id: str, name: str, lifecycle: Lifecycle) -> Response:
    data, content_type = lifecycle.read_input(key, attempt_id, name)
    return Response(data, media_type=content_type)


@router.post("/attempts/{attempt_id}/complete", response_model=AttemptResult)
def complete(
    key: WorkerKey, attempt_id: str, body: CompleteRequest, lifecycle: Lifecycle, signal: Signal
) -> AttemptResult:
    """Accepts the result, once. Files the worker put straight into the store are checked
    there (present, within the size limit) before the job is marked succeeded. With `next`,
    the worker's next claim is answered in the same transaction (the answer's `next`)."""
    return lifecycle.complete(key, attempt_id, body, signal)


@router.post(
    "/attempts/{attempt_id}/complete-inline",
    response_model=AttemptResult,
    summary="Upload small outputs and complete, in one call",
    responses=error_responses(415, 422),
)
async def complete_inline(
    key: WorkerKey,
    attempt_id: str,
    body: InlineCompleteRequest,
    lifecycle: Lifecycle,
    signal: Signal,
) -> AttemptResult:
    """`complete` with the output files inside the body (base64; the JSON body limit bounds
    them): one request instead of an upload per output plus a complete. `next` as in
    `complete`."""
    try:
        return await lifecycle.complete_inline(key, attempt_id, body, signal)
    except ArtifactTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc


@router.post("/attempts/{attempt_id}/fail", response_model=AttemptResult)
async def fail(
    key: WorkerKey, attempt_id: str, body: FailRequest, lifecycle: Lifecycle, signal: Signal
) -> AttemptResult:
    outcome = await run_blocking(lifecycle.fail, key, attempt_id, body)
    if outcome.job_status is JobStatus.queued:
        signal.announce()
    return outcome


@router.post(
    "/attempts/{attempt_id}/outputs/{index}/multipart",
    response_model=MultipartUpload,
    summary="Start a direct multipart upload of a big output (S3-compatible stores)",
    responses=error_responses(415),
)
def start_multipart(
    key: WorkerKey, attempt_id: str, index: int, body: MultipartStart, lifecycle: Lifecycle
) -> MultipartUpload:
    _check_index(index)
    plan = lifecycle.start_multipart(key, attempt_id, index, body.size_bytes, body.content_type)
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
    key: WorkerKey, attempt_id: str, index: int, body: MultipartFinish, lifecycle: Lifecycle
) -> UploadedArtifact:
    _check_index(index)
    parts = [(p.part_number, p.etag) for p in body.parts]
    artifact_key, size = lifecycle.finish_multipart(key, attempt_id, index, body.upload_id, parts)
    return UploadedArtifact(key=artifact_key, size_bytes=size, sha256="")


def _check_index(index: int) -> None:
    if not 0 <= index < 64:
        raise InvalidField(("path", "index"), f"output index must be within 0..63, got {index}")
