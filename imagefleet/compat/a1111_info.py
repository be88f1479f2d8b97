"""The AUTOMATIC1111 web UI's read endpoints that clients call before generating: models,
samplers, schedulers, LoRAs, scripts, options and progress, answered from the registry and
the caller's own jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from imagefleet.blocking import run_blocking
from imagefleet.compat.a1111 import READ_ERRORS, a1111_key
from imagefleet.compat.a1111_mapping import SCHEDULERS, model_title
from imagefleet.orchestrator.deps import AppSettings, Db, Lifecycle
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.protocol import JobStatus, ModelKind
from imagefleet.samplers import SAMPLER_NAMES
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import Model, list_models

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], route_class=DocumentedRoute)
Key = Depends(a1111_key)


def _models(db: Database, kind: ModelKind) -> list[Model]:
    with db.read() as conn:
        return [model for model in list_models(conn) if model.kind is kind]


@router.get(
    "/sd-models", summary="Registered checkpoints, as the web UI lists them", responses=READ_ERRORS
)
async def sd_models(db: Db, key: ApiKey = Key) -> list[dict[str, Any]]:
    found = await run_blocking(_models, db, ModelKind.checkpoint)
    return [
        {
            "title": model_title(m.name, m.version, m.sha256),
            "model_name": m.name,
            "hash": m.sha256[:10],
            "sha256": m.sha256,
            "filename": f"{m.name}@{m.version}",
            "config": None,
        }
        for m in found
    ]


@router.get(
    "/loras", summary="Registered LoRAs (use them as <lora:name:weight>)", responses=READ_ERRORS
)
async def loras(db: Db, key: ApiKey = Key) -> list[dict[str, Any]]:
    found = await run_blocking(_models, db, ModelKind.lora)
    return [
        {"name": m.name, "alias": m.name, "path": f"{m.name}@{m.version}", "metadata": {}}
        for m in found
    ]


@router.get("/samplers", summary="Samplers, by their web UI labels", responses=READ_ERRORS)
async def samplers(key: ApiKey = Key) -> list[dict[str, Any]]:
    return [
        {"name": names.label, "aliases": [sampler.value, *names.aliases], "options": {}}
        for sampler, names in SAMPLER_NAMES.items()
    ]


@router.get(
    "/schedulers", summary="Schedulers that can be combined with a sampler", responses=READ_ERRORS
)
async def schedulers(key: ApiKey = Key) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "label": label,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for name, label in SCHEDULERS.items()
    ]


@router.get("/scripts", summary="Scripts: none are offered", responses=READ_ERRORS)
async def scripts(key: ApiKey = Key) -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get(
    "/options", summary="Settings the web UI clients read (read-only)", responses=READ_ERRORS
)
async def options(settings: AppSettings, db: Db, key: ApiKey = Key) -> dict[str, Any]:
    current = settings.compat_default_model
    if current:
        found = [
            m for m in await run_blocking(_models, db, ModelKind.checkpoint) if m.name == current
        ]
        if found:
            current = model_title(found[0].name, found[0].version, found[0].sha256)
    return {
        "sd_model_checkpoint": current or None,
        "samples_format": "png",
        "CLIP_stop_at_last_layers": 1,
        "sd_vae": "Automatic",
    }


@router.get("/progress", summary="Progress of your newest running job", responses=READ_ERRORS)
async def progress(lifecycle: Lifecycle, key: ApiKey = Key) -> dict[str, Any]:
    running, _ = await run_blocking(
        lambda: lifecycle.list_jobs(key, status=JobStatus.running, cursor=None, limit=1)
    )
    queued, _ = await run_blocking(
        lambda: lifecycle.list_jobs(key, status=JobStatus.queued, cursor=None, limit=50)
    )
    job = running[0] if running else None
    step, total = (job.progress_step, job.progress_total) if job else (0, 0)
    return {
        "progress": min(1.0, step / total) if total else 0.0,
        "eta_relative": 0.0,
        "state": {
            "skipped": False,
            "interrupted": False,
            "job": job.id if job else "",
            "job_count": len(running) + len(queued),
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": total,
        },
        "current_image": None,
        "textinfo": None,
    }
