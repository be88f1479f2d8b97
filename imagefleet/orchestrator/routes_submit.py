"""Submitting work: `POST /v1/jobs` (any registered kind) and `POST /v1/inputs` (an image a job
will read). The submit body is a union of every registered kind's model, so the router is built
once the kinds are known (`create_app` loads plug-ins first).

No `from __future__ import annotations` here: the submit route's body annotation names a local
(the union of kinds), which FastAPI can only see if annotations are evaluated at definition."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request, Response

from imagefleet.api_views import InputView, JobView
from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField, PayloadTooLarge, UnsupportedMediaType
from imagefleet.images import EXTENSIONS
from imagefleet.orchestrator.deps import ClientKey, Lifecycle
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, ErrorBody, error_responses
from imagefleet.orchestrator.routes_client import submit_and_show
from imagefleet.orchestrator.views import input_view
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.database import WorkHint
from imagefleet.store.keys import ApiKey

ACCEPTED_IMAGE_TYPES = tuple(EXTENSIONS)
# A train_lora dataset: a zip of images and captions (see imagefleet/training/dataset.py).
ACCEPTED_INPUT_TYPES = (*ACCEPTED_IMAGE_TYPES, "application/zip")
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Makes retries safe: the same key and body within 24 h return the "
        "same job instead of queueing another.",
    ),
]


def submit_router(job_type: Any) -> APIRouter:
    """The submit routes for the union of registered job kinds."""
    router = APIRouter(prefix="/v1", tags=["client"], route_class=DocumentedRoute)

    @router.post(
        "/jobs",
        status_code=201,
        response_model=JobView,
        summary="Submit a job of any kind",
        responses={
            200: {"description": "A repeat of an earlier submit with the same Idempotency-Key"},
            404: {
                "description": "A model or input the job names does not exist",
                "model": ErrorBody,
            },
            409: {
                "description": "The Idempotency-Key was used with a different body",
                "model": ErrorBody,
            },
            429: {
                "description": "Rate limit or queued-jobs limit reached; see Retry-After",
                "model": ErrorBody,
            },
        },
    )
    async def submit_job(
        request: Request,
        response: Response,
        key: ClientKey,
        job: Annotated[job_type, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> JobView:
        return await submit(request, response, key, job, idempotency_key)

    @router.post(
        "/inputs",
        status_code=201,
        response_model=InputView,
        summary="Upload an input image (init image, mask) for later jobs",
        description="The body is the image itself (Content-Type image/png, image/jpeg or "
        "image/webp), or a multipart form with the image in a field named `file`. A "
        "train_lora dataset is a zip of images and .txt captions (application/zip).",
        responses={
            **error_responses(415, 422),
            413: {"description": "Larger than IMAGEFLEET_MAX_INPUT_BYTES", "model": ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/webp": {"schema": {"type": "string", "format": "binary"}},
                    "application/zip": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def upload_input(request: Request, key: ClientKey, lifecycle: Lifecycle) -> InputView:
        data, content_type = await read_upload(request, lifecycle.settings.max_input_bytes)
        row = await lifecycle.upload_input(key, data, content_type)
        return input_view(row)

    @router.post(
        "/jobs/{job_id}/outputs/{index}/input",
        status_code=201,
        response_model=InputView,
        summary="Use one of your job's outputs as an input of later jobs",
        description="Copies output `index` of a succeeded job (e.g. a preprocess job's edge "
        "map) into a new input, as if uploaded: pass its id as a later job's "
        "`controlnet.image`, `init_image` or `mask`.",
        responses=error_responses(404, 422),
    )
    async def output_as_input(
        key: ClientKey, job_id: str, index: int, lifecycle: Lifecycle
    ) -> InputView:
        data, content_type, _ = await run_blocking(lifecycle.output_file, key, job_id, index)
        row = await lifecycle.upload_input(key, data, content_type)
        return input_view(row)

    return router


async def submit(
    request: Request, response: Response, key: ApiKey, job: Any, idempotency_key: str | None
) -> JobView:
    """POST /v1/jobs once its body is validated: 201 with the new job, or 200 with the job an
    earlier submit of the same Idempotency-Key made. Also called by the lean path
    (hot_routes.py)."""
    lifecycle: JobLifecycle = request.app.state.lifecycle
    job = await lifecycle.import_dataset_sources(key, job)  # train_lora url/s3 datasets
    submitted, view = await run_blocking(submit_and_show, request, key, job, idempotency_key)
    row = submitted.row
    if submitted.replayed or submitted.combo is None:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        signal: WorkSignal = request.app.state.work_signal
        signal.announce(WorkHint(row.kind, row.pixels, row.required_vram_mb, row.id))
    return view


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The uploaded file and its declared type, from a raw body or a multipart form, refused
    with 413 past `max_bytes` before it is all in memory."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + (64 << 10):
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise InvalidField(("body", "file"), "the form has no file field named `file`")
        data = await file.read(max_bytes + 1)
        file_type = (file.content_type or "").split(";")[0].strip().lower()
        await form.close()
    else:
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
            chunks.append(chunk)
        data, file_type = b"".join(chunks), content_type
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
    if file_type not in ACCEPTED_INPUT_TYPES:
        raise UnsupportedMediaType(
            f"inputs are {', '.join(ACCEPTED_INPUT_TYPES)}; got {file_type or 'no content type'!r}"
        )
    return data, file_type
