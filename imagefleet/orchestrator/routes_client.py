"""Client endpoints: submit, read, list and cancel jobs; download outputs; list models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imagefleet.artifacts.base import ArtifactStore
from imagefleet.errors import NotFound
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.deps import Artifacts, ClientKey, Db, Lifecycle, Signal
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.views import attempt_view, job_view
from imagefleet.protocol import (
    AccountView,
    AttemptView,
    JobCreate,
    JobPage,
    JobStatus,
    JobView,
    ModelView,
    WebhookDeliveryView,
)
from imagefleet.store.artifacts import ArtifactRow
from imagefleet.store.jobs import JobRow
from imagefleet.store.models import list_models

router = APIRouter(prefix="/v1", tags=["client"])


def _views(request: Request, rows: list[JobRow]) -> list[JobView]:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    finished = [row.id for row in rows if row.status is JobStatus.succeeded]
    outputs: dict[str, list[ArtifactRow]] = {row.id: [] for row in rows}
    if finished:
        with lifecycle.db.read() as conn:
            outputs.update(lifecycle.outputs(conn, finished))

    store: ArtifactStore = request.app.state.artifacts
    proxied = lifecycle.settings.proxy_downloads

    def url(artifact: ArtifactRow) -> str:
        """A presigned store URL (expiring) when the store has them, else the API's route."""
        if not proxied:
            direct = store.presigned_get(artifact.key, f"{artifact.job_id}-{artifact.idx}.png")
            if direct:
                return direct
        return str(request.url_for("download_output", job_id=artifact.job_id, index=artifact.idx))

    return [job_view(row, outputs[row.id], url) for row in rows]


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobView,
    summary="Submit a job",
    responses={
        200: {"description": "A repeat of an earlier submit with the same Idempotency-Key"},
        409: {"description": "The Idempotency-Key was used with a different body"},
        429: {"description": "Rate limit or queued-jobs limit reached; see Retry-After"},
    },
)
async def submit_job(
    request: Request,
    response: Response,
    key: ClientKey,
    job: Annotated[JobCreate, Body()],
    lifecycle: Lifecycle,
    signal: Signal,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Makes retries safe: the same key and body within 24 h return the "
            "same job instead of queueing another.",
        ),
    ] = None,
) -> JobView:
    row, replayed = await run_in_threadpool(lifecycle.submit, key, job, idempotency_key)
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        signal.notify()
    return (await run_in_threadpool(_views, request, [row]))[0]


@router.get("/jobs", response_model=JobPage, summary="List your jobs, newest first")
def list_jobs(
    request: Request,
    key: ClientKey,
    lifecycle: Lifecycle,
    status: JobStatus | None = None,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
) -> JobPage:
    rows, next_cursor = lifecycle.list_jobs(key, status=status, cursor=cursor, limit=limit)
    return JobPage(jobs=_views(request, rows), next_cursor=next_cursor)


@router.get("/jobs/{job_id}", response_model=JobView, summary="Get one job")
def get_job(request: Request, key: ClientKey, job_id: str, lifecycle: Lifecycle) -> JobView:
    return _views(request, [lifecycle.get(key, job_id)])[0]


@router.get(
    "/jobs/{job_id}/attempts",
    response_model=list[AttemptView],
    summary="A job's attempt history: which worker and node tried it, when, and how it ended",
)
def get_attempts(key: ClientKey, job_id: str, lifecycle: Lifecycle) -> list[AttemptView]:
    return [attempt_view(row) for row in lifecycle.attempts(key, job_id)]


@router.get(
    "/jobs/{job_id}/webhooks",
    response_model=list[WebhookDeliveryView],
    summary="The job's webhook deliveries: state, attempts, last error",
)
def get_webhook_deliveries(
    key: ClientKey, job_id: str, lifecycle: Lifecycle
) -> list[WebhookDeliveryView]:
    return [webhooks.describe(d) for d in lifecycle.deliveries(key, job_id)]


@router.get(
    "/account", response_model=AccountView, summary="The calling key and its webhook secret"
)
def get_account(key: ClientKey) -> AccountView:
    return AccountView(
        key_id=key.id,
        name=key.name,
        scope=key.scope,
        tier=key.tier,
        webhook_secret=key.webhook_secret or "",
    )


@router.post("/jobs/{job_id}/cancel", response_model=JobView, summary="Cancel a job")
def cancel_job(request: Request, key: ClientKey, job_id: str, lifecycle: Lifecycle) -> JobView:
    return _views(request, [lifecycle.cancel(key, job_id)])[0]


@router.get(
    "/jobs/{job_id}/outputs/{index}",
    name="download_output",
    summary="Download one output file",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def download_output(
    key: ClientKey, job_id: str, index: int, lifecycle: Lifecycle, store: Artifacts
) -> Response:
    row = lifecycle.get(key, job_id)
    with lifecycle.db.read() as conn:
        outputs = lifecycle.outputs(conn, [row.id])[row.id]
    artifact = next((a for a in outputs if a.idx == index), None)
    if artifact is None:
        raise NotFound(f"job {job_id} has no output {index}")
    data = store.read(artifact.key)
    return Response(
        data,
        media_type=artifact.content_type,
        headers={"Content-Disposition": f'inline; filename="{job_id}-{index}.png"'},
    )


@router.get("/models", response_model=list[ModelView], summary="List registered models")
def get_models(key: ClientKey, db: Db) -> list[ModelView]:
    with db.read() as conn:
        found = list_models(conn)
    return [
        ModelView(
            name=m.name,
            version=m.version,
            kind="checkpoint",
            sha256=m.sha256,
            size_bytes=m.size_bytes,
        )
        for m in found
    ]
