"""ComfyUI-compatible endpoints, so existing ComfyUI clients run their workflows on the fleet:
`POST /prompt` queues a comfy job (the prompt id is the job id), `/history`, `/view`, `/queue`,
`/interrupt`, `/object_info`, `/upload/image` and the `/ws` websocket answer as ComfyUI's
server does. Every one needs a client key (see comfy_auth.py); a caller sees only its own
prompts. Routes translate only: jobs are submitted, read and cancelled through the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from imagefleet.blocking import run_blocking
from imagefleet.comfy.graph import GraphError, GraphInvalid, parse_graph
from imagefleet.comfy.nodes import NodeSpec
from imagefleet.comfy.protocol import ComfyPrompt, PromptAccepted, PromptRejected, UploadedImage
from imagefleet.comfy.registry import node_specs
from imagefleet.comfy.validation import validate
from imagefleet.errors import BadRequest, InvalidField, NotFound, PayloadTooLarge
from imagefleet.kinds.comfy import SPEC as COMFY
from imagefleet.kinds.comfy import ComfyJob, ComfyParams
from imagefleet.orchestrator import comfy_events, comfy_views
from imagefleet.orchestrator.comfy_auth import comfy_client_key, websocket_key
from imagefleet.orchestrator.deps import Db, Lifecycle, Signal
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.orchestrator.routes_submit import ACCEPTED_IMAGE_TYPES
from imagefleet.protocol import JobStatus
from imagefleet.store.jobs import JobRow
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import list_models

ComfyKey = Annotated[ApiKey, Depends(comfy_client_key)]
WS_POLL_SECONDS = 0.25
WS_RECENT_SECONDS = 300.0  # jobs this recent are reported to a websocket that connects late
LISTED = 200
_AUTH = error_responses(401, 403, 429, 503)

router = APIRouter(tags=["comfyui"], route_class=DocumentedRoute)


@cache
def _specs() -> dict[str, NodeSpec]:
    return node_specs()


def comfy_jobs(lifecycle: JobLifecycle, key: ApiKey, *statuses: JobStatus) -> list[JobRow]:
    """The key's comfy jobs, newest first (at most LISTED per status)."""
    rows: list[JobRow] = []
    for status in statuses or (None,):
        found, _ = lifecycle.list_jobs(key, status=status, cursor=None, limit=LISTED)
        rows += [row for row in found if row.kind == COMFY.name]
    return sorted(rows, key=lambda row: row.created_at, reverse=True)


def output_indices(lifecycle: JobLifecycle, rows: list[JobRow]) -> dict[str, list[int]]:
    outputs, _ = lifecycle.details(rows)
    return {row.id: [artifact.idx for artifact in outputs[row.id]] for row in rows}


def _rejected(error: dict[str, Any], nodes: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "node_errors": nodes or {}}, status_code=400)


_JSON_BODY = {
    "requestBody": {
        "content": {"application/json": {"schema": ComfyPrompt.model_json_schema()}},
        "required": True,
    }
}


@router.post(
    "/prompt",
    response_model=PromptAccepted,
    summary="Queue an API-format graph (ComfyUI's POST /prompt)",
    description="The body is JSON whatever its Content-Type says, as ComfyUI reads it.",
    responses={
        400: {
            "description": "The graph cannot run: ComfyUI's error and node_errors",
            "model": PromptRejected,
        },
        **_AUTH,
        **error_responses(413),
    },
    openapi_extra=_JSON_BODY,
)
async def post_prompt(request: Request, key: ComfyKey, lifecycle: Lifecycle, signal: Signal) -> Any:
    try:
        body = ComfyPrompt.model_validate_json(await request.body())
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        return _rejected(
            {
                "type": "invalid_prompt",
                "message": f"{where}: {problem['msg']}",
                "details": "",
                "extra_info": {},
            }
        )
    try:
        errors = validate(parse_graph(body.prompt), _specs())
    except GraphInvalid as exc:
        errors = exc.errors
    if errors:
        summary, by_node = comfy_views.node_errors(errors)
        return _rejected(summary, by_node)
    job = ComfyJob(params=ComfyParams(graph=body.prompt, client_id=body.client_id))
    try:
        row, _ = await run_blocking(lifecycle.submit, key, job)
    except (InvalidField, NotFound) as exc:
        summary, by_node = comfy_views.node_errors(_located(exc))
        return _rejected(summary, by_node)
    signal.notify()
    return PromptAccepted(prompt_id=row.id, number=comfy_views.number(row), node_errors={})


async def _json_object(request: Request) -> dict[str, Any]:
    """A ComfyUI client's JSON body (any Content-Type; empty means {})."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _located(exc: InvalidField | NotFound) -> list[GraphError]:
    """A submit's refusal as a graph error, at its node and input when it names them."""
    loc = list(getattr(exc, "loc", ()))
    node_id = str(loc[3]) if len(loc) > 3 and loc[:3] == ["body", "params", "graph"] else None
    input_name = str(loc[5]) if len(loc) > 5 else None
    kind = "value_not_in_list" if isinstance(exc, NotFound) else "invalid_prompt"
    if node_id is None:
        return [GraphError(kind, exc.message)]
    return [
        GraphError(kind, exc.message, "", node_id, None, input_name),
        GraphError(kind, exc.message),
    ]


@router.get("/prompt", summary="The queue left (ComfyUI's GET /prompt)", responses=_AUTH)
def get_prompt(key: ComfyKey, lifecycle: Lifecycle) -> dict[str, Any]:
    waiting = comfy_jobs(lifecycle, key, JobStatus.queued, JobStatus.running)
    return {"exec_info": {"queue_remaining": len(waiting)}}


@router.get("/history", summary="Your finished prompts, newest first", responses=_AUTH)
def get_history(
    key: ComfyKey, lifecycle: Lifecycle, max_items: int = Query(50, ge=1, le=LISTED)
) -> dict[str, Any]:
    rows = [row for row in comfy_jobs(lifecycle, key) if row.status.is_final][:max_items]
    indices = output_indices(lifecycle, rows)
    return {row.id: comfy_views.history_entry(row, indices[row.id], _specs()) for row in rows}


@router.get(
    "/history/{prompt_id}",
    summary="One prompt's outputs once it has finished (empty before)",
    responses={**_AUTH, **error_responses(404)},
)
def get_one_history(prompt_id: str, key: ComfyKey, lifecycle: Lifecycle) -> dict[str, Any]:
    row = lifecycle.get(key, prompt_id)
    if row.kind != COMFY.name:
        raise NotFound(f"no prompt {prompt_id}")
    if not row.status.is_final:
        return {}
    indices = output_indices(lifecycle, [row])[row.id]
    return {row.id: comfy_views.history_entry(row, indices, _specs())}


@router.get(
    "/view",
    summary="Download an output image by its ComfyUI file name",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_AUTH, **error_responses(404)},
)
def view(
    key: ComfyKey,
    lifecycle: Lifecycle,
    filename: str = Query(max_length=200),
    subfolder: str = Query("", max_length=200),
    type: str = Query("output", max_length=20),
) -> Response:
    parsed = comfy_views.parse_filename(filename)
    if parsed is None or subfolder not in ("", "."):
        raise NotFound(f"no file {filename!r} in {subfolder or 'the output folder'}")
    data, content_type, _ = lifecycle.output_file(key, *parsed)
    return Response(data, media_type=content_type)


@router.get("/queue", summary="Your running and pending prompts", responses=_AUTH)
def get_queue(key: ComfyKey, lifecycle: Lifecycle) -> dict[str, Any]:
    specs = _specs()
    running = comfy_jobs(lifecycle, key, JobStatus.running)
    pending = sorted(comfy_jobs(lifecycle, key, JobStatus.queued), key=lambda r: r.created_at)
    return {
        "queue_running": [comfy_views.queue_item(row, specs) for row in running],
        "queue_pending": [comfy_views.queue_item(row, specs) for row in pending],
    }


@router.post(
    "/queue",
    summary='Delete pending prompts: {"delete": [ids]} or {"clear": true}',
    responses={**_AUTH, **error_responses(400, 413)},
)
async def post_queue(request: Request, key: ComfyKey, lifecycle: Lifecycle) -> dict[str, Any]:
    body = await _json_object(request)
    return await run_blocking(_delete_pending, key, lifecycle, body)


def _delete_pending(key: ApiKey, lifecycle: JobLifecycle, body: dict[str, Any]) -> dict[str, Any]:
    pending = {row.id for row in comfy_jobs(lifecycle, key, JobStatus.queued)}
    chosen = pending if body.get("clear") is True else set()
    if isinstance(body.get("delete"), list):
        chosen |= {str(i) for i in body["delete"]} & pending
    for job_id in sorted(chosen):
        lifecycle.cancel(key, job_id)
    return {"deleted": sorted(chosen)}


@router.post(
    "/interrupt",
    summary="Stop your running prompts (or the one named by prompt_id)",
    responses={**_AUTH, **error_responses(400, 413)},
)
async def interrupt(request: Request, key: ComfyKey, lifecycle: Lifecycle) -> dict[str, Any]:
    body = await _json_object(request)
    return await run_blocking(_interrupt_running, key, lifecycle, body)


def _interrupt_running(
    key: ApiKey, lifecycle: JobLifecycle, body: dict[str, Any]
) -> dict[str, Any]:
    running = [row.id for row in comfy_jobs(lifecycle, key, JobStatus.running)]
    wanted = body.get("prompt_id")
    chosen = [job_id for job_id in running if wanted in (None, job_id)]
    for job_id in chosen:
        lifecycle.cancel(key, job_id)
    return {"interrupted": chosen}


@router.get("/object_info", summary="The node types this fleet runs", responses=_AUTH)
def object_info(key: ComfyKey, db: Db) -> dict[str, Any]:
    return _object_info(db, list(_specs().values()))


@router.get(
    "/object_info/{node_class}",
    summary="One node type",
    responses={**_AUTH, **error_responses(404)},
)
def one_object_info(node_class: str, key: ComfyKey, db: Db) -> dict[str, Any]:
    spec = _specs().get(node_class)
    if spec is None:
        raise NotFound(f"no node type {node_class!r}")
    return _object_info(db, [spec])


def _object_info(db: Any, specs: list[NodeSpec]) -> dict[str, Any]:
    """Loader inputs list the registered models of their kind, as ComfyUI lists files."""
    with db.read() as conn:
        models = list_models(conn)
    names: dict[str, list[str]] = {}
    for model in models:
        names.setdefault(model.kind.value, []).append(model.name)
    described = {}
    for spec in specs:
        info = spec.object_info()
        for item in spec.inputs:
            if item.model_kind:
                section = "required" if item.required else "optional"
                info["input"][section][item.name] = [sorted(set(names.get(item.model_kind, [])))]
        described[spec.name] = info
    return described


@router.post(
    "/upload/image",
    response_model=UploadedImage,
    summary="Upload an image for LoadImage (multipart field `image`)",
    responses={**_AUTH, **error_responses(413, 415, 422)},
)
async def upload_image(request: Request, key: ComfyKey, lifecycle: Lifecycle) -> UploadedImage:
    form = await request.form(max_files=1, max_fields=8)
    file = form.get("image")
    if file is None or isinstance(file, str):
        raise InvalidField(("body", "image"), "the form has no file field named `image`")
    data = await file.read(lifecycle.settings.max_input_bytes + 1)
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    await form.close()
    if len(data) > lifecycle.settings.max_input_bytes:
        raise PayloadTooLarge(
            f"the upload is larger than {lifecycle.settings.max_input_bytes} bytes"
        )
    if content_type not in ACCEPTED_IMAGE_TYPES:
        content_type = _sniffed(data) or content_type
    row = await lifecycle.upload_input(key, data, content_type)
    return UploadedImage(name=row.id)


def _sniffed(data: bytes) -> str | None:
    """Many clients send images as application/octet-stream: known signatures decide."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@router.websocket("/ws")
async def websocket(websocket: WebSocket, clientId: str | None = None) -> None:
    """ComfyUI's event stream for the key's prompts (those queued with this clientId, when
    they named one). A connection without a valid client key is refused at the handshake."""
    key = await websocket_key(websocket)
    if key is None:
        await websocket.close(code=1008, reason="a client API key is required")
        return
    await websocket.accept()
    lifecycle: JobLifecycle = websocket.app.state.lifecycle
    connected = time.time()
    seen: dict[str, comfy_events.Seen] = {}
    remaining: int | None = None
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            rows, indices = await run_blocking(_watched, lifecycle, key, connected, clientId)
            waiting = sum(1 for row in rows if not row.status.is_final)
            if remaining is None:
                await websocket.send_json(comfy_events.status(waiting, clientId))
            for row in reversed(rows):
                before = seen.get(row.id)
                if before is not None and before.status.is_final:
                    continue
                if before == comfy_events.Seen(row.status, row.progress_step):
                    continue
                for event in comfy_events.changes(before, row, indices.get(row.id, []), _specs()):
                    await websocket.send_json(event)
                seen[row.id] = comfy_events.Seen(row.status, row.progress_step)
            if remaining is not None and waiting != remaining:
                await websocket.send_json(comfy_events.status(waiting))
            remaining = waiting
            await asyncio.sleep(WS_POLL_SECONDS)


def _watched(
    lifecycle: JobLifecycle, key: ApiKey, connected: float, client_id: str | None
) -> tuple[list[JobRow], dict[str, list[int]]]:
    rows = [
        row
        for row in comfy_jobs(lifecycle, key)
        if (not row.status.is_final or (row.finished_at or 0) >= connected - WS_RECENT_SECONDS)
        and (client_id is None or row.params.get("client_id") in (None, client_id))
    ]
    done = [row for row in rows if row.status is JobStatus.succeeded]
    return rows, output_indices(lifecycle, done)
