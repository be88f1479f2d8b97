"""Deployment endpoints (issue 15): deploy a package version, list and show deployments,
promote and roll back aliases, and run a deployment. Translation only: the transitions are
in deployments.py, and a run is an ordinary job submitted through the lifecycle (kind
`workflow`, or `comfy` for a graph deployment)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from imagefleet.api_views import JobView
from imagefleet.blocking import run_blocking
from imagefleet.deployments.protocol import (
    AliasView,
    DeploymentView,
    DeployResult,
    PromoteRequest,
    RunRequest,
    VersionView,
)
from imagefleet.errors import PayloadTooLarge
from imagefleet.kinds.workflow import WorkflowJob, WorkflowParams
from imagefleet.orchestrator.deployments import (
    Deployed,
    DeploymentTransitions,
    Shown,
    check_name,
)
from imagefleet.orchestrator.deps import ClientKey, Lifecycle, Signal
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.orchestrator.routes_client import submit_and_show
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.store import deployments as sql
from imagefleet.store.database import WorkHint
from imagefleet.store.keys import ApiKey

router = APIRouter(prefix="/v1/deployments", tags=["deployments"], route_class=DocumentedRoute)


def _transitions(lifecycle: JobLifecycle) -> DeploymentTransitions:
    return DeploymentTransitions(
        lifecycle.db, lifecycle.settings, lifecycle.clock, artifacts=lifecycle.artifacts
    )


@router.put(
    "/{name}/versions",
    status_code=201,
    response_model=DeployResult,
    summary="Deploy a package (a deterministic tar.gz) as a version of `name`",
    description="The body is the package tar.gz (any Content-Type), as `imagefleet "
    "deploy` packs it. The version is the package's sha256: identical content answers 200 "
    "with the existing version. `latest` follows every new version; `alias` is pointed at "
    "this one too. Needs a deploy (or admin) key.",
    responses={
        200: {"description": "Identical content was deployed before: the existing version"},
        **error_responses(403, 404, 409, 413, 422),
    },
    openapi_extra={
        "requestBody": {
            # Any Content-Type is taken (the CLI sends application/gzip); the document names
            # the generic binary type, which every OpenAPI tool can send.
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "required": True,
        }
    },
)
async def deploy(
    request: Request,
    response: Response,
    name: str,
    key: ClientKey,
    lifecycle: Lifecycle,
    alias: str | None = Query(None, description="Also point this alias at the version."),
    public: bool | None = Query(None, description="Make the deployment public (or private)."),
) -> DeployResult:
    limit = lifecycle.settings.max_package_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the package is {declared} bytes; the limit is {limit} (IMAGEFLEET_MAX_PACKAGE_BYTES)"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the package is over the limit of {limit} bytes")
        chunks.append(chunk)
    done = await _transitions(lifecycle).deploy(key, name, b"".join(chunks), alias, public)
    if not done.created:
        response.status_code = 200
    return _deploy_result(done)


@router.get("", response_model=list[DeploymentView], summary="Your deployments and public ones")
async def list_deployments(key: ClientKey, lifecycle: Lifecycle) -> list[DeploymentView]:
    shown = await run_blocking(_transitions(lifecycle).list_deployments, key)
    return [_view(item, key) for item in shown]


@router.get(
    "/{name}",
    response_model=DeploymentView,
    summary="A deployment's versions and aliases",
    responses=error_responses(404, 422),
)
async def show_deployment(name: str, key: ClientKey, lifecycle: Lifecycle) -> DeploymentView:
    return _view(await run_blocking(_transitions(lifecycle).show, key, name), key)


@router.post(
    "/{name}/aliases/{alias}",
    response_model=DeploymentView,
    summary="Point an alias at a version (promote)",
    responses=error_responses(403, 404, 422),
)
async def promote(
    name: str, alias: str, body: PromoteRequest, key: ClientKey, lifecycle: Lifecycle
) -> DeploymentView:
    shown = await run_blocking(_transitions(lifecycle).promote, key, name, alias, body.version)
    return _view(shown, key)


@router.post(
    "/{name}/aliases/{alias}/rollback",
    response_model=DeploymentView,
    summary="Point an alias back at its previous version",
    responses=error_responses(403, 404, 409, 422),
)
async def rollback(name: str, alias: str, key: ClientKey, lifecycle: Lifecycle) -> DeploymentView:
    shown = await run_blocking(_transitions(lifecycle).rollback, key, name, alias)
    return _view(shown, key)


@router.post(
    "/{name}/runs",
    status_code=201,
    response_model=JobView,
    summary="Run a deployment (a job owned by, and billed to, the caller)",
    description="The inputs are checked against the version's input schema (422 naming the "
    "field). Without `version` or `alias` the run uses `production`, else `latest`. The same "
    'as POST /v1/jobs with `{"kind": "workflow", "params": {"deployment": name, ...}}`.',
    responses=error_responses(404, 422, 429),
)
async def run_deployment(
    request: Request,
    name: str,
    body: RunRequest,
    key: ClientKey,
    lifecycle: Lifecycle,
    signal: Signal,
) -> JobView:
    check_name(name)  # a 422 naming the path, before the params model would refuse it
    params = WorkflowParams(
        deployment=name, version=body.version, alias=body.alias, inputs=body.inputs, seed=body.seed
    )
    job = WorkflowJob(params=params)
    submitted, view = await run_blocking(submit_and_show, request, key, job, None)
    row = submitted.row
    signal.announce(WorkHint(row.kind, row.pixels, row.required_vram_mb, row.id))
    return view


def _version_view(row: sql.VersionRow) -> VersionView:
    manifest = row.manifest
    return VersionView(
        version=row.version,
        number=row.number,
        type=row.type,
        size_bytes=row.size_bytes,
        created_at=to_datetime(row.created_at),
        input_schema=manifest.input_schema,
        models=manifest.models,
        requirements=list(manifest.requirements),
        outputs=manifest.outputs,
    )


def _alias_views(aliases: list[sql.AliasRow], versions: list[sql.VersionRow]) -> list[AliasView]:
    numbers = {v.version: v.number for v in versions}
    return [
        AliasView(
            alias=a.alias,
            version=a.version,
            number=numbers.get(a.version, 0),
            previous_version=a.previous_version,
            updated_at=to_datetime(a.updated_at),
        )
        for a in aliases
    ]


def _view(shown: Shown, key: ApiKey) -> DeploymentView:
    row = shown.deployment
    return DeploymentView(
        name=row.name,
        public=row.public,
        owned=row.owner_key_id == key.id,
        created_at=to_datetime(row.created_at),
        aliases=_alias_views(shown.aliases, shown.versions),
        versions=[_version_view(v) for v in shown.versions],
    )


def _deploy_result(done: Deployed) -> DeployResult:
    return DeployResult(
        name=done.deployment.name,
        version=_version_view(done.version),
        created=done.created,
        aliases=_alias_views(done.aliases, [done.version]),
    )
