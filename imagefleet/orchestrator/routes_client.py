"""Client endpoints: submit, read, list and cancel jobs; download outputs; list models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from imagefleet.api_views import (
    AccountView,
    AttemptView,
    JobPage,
    JobView,
    ModelView,
    WebhookDeliveryView,
)
from imagefleet.artifacts.base import ArtifactStore
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.client_transitions import Submitted
from imagefleet.orchestrator.deps import ClientKey, Db, Lifecycle
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.orchestrator.usage import job_cost_views
from imagefleet.orchestrator.views import attempt_view, job_view, model_view
from imagefleet.protocol import JobStatus
from imagefleet.scheduling.waiting import SeenWorker
from imagefleet.store.artifacts import ArtifactRow
from imagefleet.store.job_models import JobModel
from imagefleet.store.jobs import JobRow
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import list_models

router = APIRouter(prefix="/v1", tags=["client"], route_class=DocumentedRoute)


def render_jobs(
    request: Request,
    rows: list[JobRow],
    details: tuple[dict[str, list[ArtifactRow]], dict[str, list[JobModel]]] | None = None,
    *,
    explain: bool = False,
    seen: list[SeenWorker] | None = None,
    ahead: tuple[int, int] | None = None,
) -> list[JobView]:
    """Job rows as the API shows them: with accepted outputs (download URLs) and combos,
    read unless the caller already has them (`details`, as `JobLifecycle.details` returns),
    and with `explain` (one job read on its own) why a queued job waits (with `seen` and
    `ahead`, the workers and the queue position a submit just read)."""
    lifecycle: JobLifecycle = request.app.state.lifecycle
    store: ArtifactStore = request.app.state.artifacts
    outputs, combos = details if details is not None else lifecycle.details(rows)
    proxied = lifecycle.settings.proxy_downloads

    def url(artifact: ArtifactRow) -> str:
        """A presigned store URL (expiring) when the store has them, else the API's route."""
        if not proxied:
            name = f"{artifact.job_id}-{artifact.idx}.{artifact.key.rpartition('.')[2]}"
            direct = store.presigned_get(artifact.key, name)
            if direct:
                return direct
        return str(request.url_for("download_output", job_id=artifact.job_id, index=artifact.idx))

    # A job that never had an attempt has no cost: no read (and no price table) for it.
    attempted = [row.id for row in rows if row.attempts]
    costs = (
        job_cost_views(lifecycle.db, attempted, request.app.state.pools.prices(), lifecycle.clock())
        if attempted
        else {}
    )
    return [
        job_view(
            row,
            outputs[row.id],
            url,
            combos[row.id],
            lifecycle.queue_view(row, combos[row.id], seen, ahead) if explain else None,
        ).model_copy(update={"cost": costs.get(row.id)})
        for row in rows
    ]


def submit_and_show(
    request: Request, key: ApiKey, job: Any, idempotency_key: str | None
) -> tuple[Submitted, JobView]:
    """Submits and renders the answer in one call, for one hand-off to a pool thread: a new job
    with what the submit just read (its combo, the workers seen, its place; no outputs yet), a
    replayed one read like any other."""
    lifecycle: JobLifecycle = request.app.state.lifecycle
    submitted = lifecycle.submit_with_combo(key, job, idempotency_key)
    row, combo = submitted.row, submitted.combo
    if submitted.replayed or combo is None:
        return submitted, render_jobs(request, [row])[0]
    details: tuple[dict[str, list[ArtifactRow]], dict[str, list[JobModel]]]
    details = ({row.id: []}, {row.id: combo})
    views = render_jobs(
        request, [row], details, explain=True, seen=submitted.seen, ahead=submitted.ahead
    )
    return submitted, views[0]


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="List your jobs, newest first (an admin: every tenant's, with all_tenants)",
)
def list_jobs(
    request: Request,
    key: ClientKey,
    lifecycle: Lifecycle,
    status: JobStatus | None = None,
    cursor: str | None = Query(None, max_length=200, pattern="^[A-Za-z0-9_=-]+$"),
    limit: int = Query(50, ge=1, le=200),
    all_tenants: bool = Query(
        False, description="Every tenant's jobs, each with its `owner` (admin keys only: 403)."
    ),
) -> JobPage:
    rows, next_cursor = lifecycle.list_jobs(
        key, status=status, cursor=cursor, limit=limit, all_tenants=all_tenants
    )
    views = render_jobs(request, rows)
    if all_tenants:
        names = lifecycle.owner_names(rows)
        views = [
            view.model_copy(update={"owner": names.get(row.owner_key_id)})
            for view, row in zip(views, rows, strict=True)
        ]
    return JobPage(jobs=views, next_cursor=next_cursor)


@router.get("/jobs/{job_id}", response_model=JobView, summary="Get one job")
def get_job(request: Request, key: ClientKey, job_id: str, lifecycle: Lifecycle) -> JobView:
    return render_jobs(request, [lifecycle.get(key, job_id)], explain=True)[0]


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
    return render_jobs(request, [lifecycle.cancel(key, job_id)])[0]


@router.get(
    "/jobs/{job_id}/outputs/{index}",
    name="download_output",
    summary="Download one output file",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def download_output(key: ClientKey, job_id: str, index: int, lifecycle: Lifecycle) -> Response:
    data, content_type, filename = lifecycle.output_file(key, job_id, index)
    return Response(
        data,
        media_type=content_type,
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


@router.get("/models", response_model=list[ModelView], summary="List registered models")
def get_models(key: ClientKey, db: Db) -> list[ModelView]:
    with db.read() as conn:
        found = list_models(conn)
    return [model_view(m) for m in found]
