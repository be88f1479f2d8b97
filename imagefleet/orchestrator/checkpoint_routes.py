"""Training routes: the worker's `checkpoint` and `resume` calls and checkpoint downloads, and
the client's view of a training job (loss curve, checkpoints, interruptions, cost). Each route
translates one request into one lifecycle call."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from imagefleet.artifacts.base import ArtifactTooLarge
from imagefleet.blocking import run_blocking
from imagefleet.checkpoint_protocol import CheckpointUploadTarget, StoredCheckpoint
from imagefleet.errors import InvalidField, PayloadTooLarge, UnsupportedMediaType
from imagefleet.orchestrator.checkpoint_transitions import CHECKPOINT_MEDIA_TYPE
from imagefleet.orchestrator.deps import ClientKey, Lifecycle, WorkerKey
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.training_protocol import CheckpointReceipt, ResumeReport, TrainingView

worker_router = APIRouter(prefix="/v1/worker", tags=["worker"], route_class=DocumentedRoute)
client_router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=DocumentedRoute)
MAX_CHECKPOINT_ID = 2**62


@worker_router.put(
    "/attempts/{attempt_id}/checkpoints/{step}",
    response_model=CheckpointReceipt,
    summary="Report a training checkpoint (raw zip body)",
    description="Stores the checkpoint archive and records it for the attempt (the `checkpoint` "
    "transition); the job keeps its newest `keep_last` checkpoints and deletes the rest.",
    responses=error_responses(413, 415, 422),
)
async def put_checkpoint(
    request: Request, key: WorkerKey, attempt_id: str, step: int, lifecycle: Lifecycle
) -> CheckpointReceipt:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != CHECKPOINT_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"a checkpoint is sent as {CHECKPOINT_MEDIA_TYPE}, not {content_type or 'nothing'!r}"
        )
    if not 1 <= step <= 1_000_000:
        raise InvalidField(("path", "step"), f"step must be within 1..1000000, got {step}")
    try:
        return await lifecycle.upload_checkpoint(key, attempt_id, step, request.stream())
    except ArtifactTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc


@worker_router.post(
    "/attempts/{attempt_id}/checkpoints/{step}/direct",
    response_model=CheckpointUploadTarget,
    summary="A presigned URL to put a training checkpoint straight into the bucket",
    description="With an S3-compatible store: PUT the zip to `url`, then report it with "
    "`.../checkpoints/{step}/stored`. `url` is null with the local store: PUT the zip to "
    "`.../checkpoints/{step}` instead.",
    responses=error_responses(422),
)
def post_checkpoint_direct(
    key: WorkerKey, attempt_id: str, step: int, lifecycle: Lifecycle
) -> CheckpointUploadTarget:
    _check_step_range(step)
    return lifecycle.checkpoint_upload_target(key, attempt_id, step)


@worker_router.post(
    "/attempts/{attempt_id}/checkpoints/{step}/stored",
    response_model=CheckpointReceipt,
    summary="Report a checkpoint put through its presigned URL (the `checkpoint` transition)",
    responses=error_responses(413, 422),
)
async def post_checkpoint_stored(
    key: WorkerKey, attempt_id: str, step: int, body: StoredCheckpoint, lifecycle: Lifecycle
) -> CheckpointReceipt:
    _check_step_range(step)
    try:
        return await lifecycle.record_stored_checkpoint(key, attempt_id, step, body)
    except ArtifactTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc


def _check_step_range(step: int) -> None:
    if not 1 <= step <= 1_000_000:
        raise InvalidField(("path", "step"), f"step must be within 1..1000000, got {step}")


@worker_router.get(
    "/attempts/{attempt_id}/checkpoints/{checkpoint_id}",
    summary="Download a checkpoint of the attempt's job, to resume from",
    response_class=Response,
    responses={200: {"content": {CHECKPOINT_MEDIA_TYPE: {}}}, **error_responses(422)},
)
def get_checkpoint(
    key: WorkerKey, attempt_id: str, checkpoint_id: int, lifecycle: Lifecycle
) -> Response:
    if not 1 <= checkpoint_id <= MAX_CHECKPOINT_ID:
        raise InvalidField(("path", "checkpoint_id"), "not a checkpoint id")
    data = lifecycle.read_checkpoint(key, attempt_id, checkpoint_id)
    return Response(data, media_type=CHECKPOINT_MEDIA_TYPE)


@worker_router.post(
    "/attempts/{attempt_id}/resume",
    status_code=204,
    response_class=Response,
    summary="Report where a training attempt starts and the checkpoints it passed over",
    responses=error_responses(422),
)
def post_resume(
    key: WorkerKey, attempt_id: str, body: ResumeReport, lifecycle: Lifecycle
) -> Response:
    lifecycle.report_resume(key, attempt_id, body)
    return Response(status_code=204)


@client_router.get(
    "/{job_id}/training",
    response_model=TrainingView,
    summary="A training job's progress, loss curve, checkpoints, interruptions and cost",
    responses=error_responses(422),
)
async def get_training(key: ClientKey, job_id: str, lifecycle: Lifecycle) -> TrainingView:
    return await run_blocking(lifecycle.training_view, key, job_id)
