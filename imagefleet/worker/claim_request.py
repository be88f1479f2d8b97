"""What a worker tells the orchestrator when it asks for work: its capabilities and what it
holds warm (resident combos and models, cached files), so that scheduling can place jobs
where their models already are. Pure: it reads the worker's parts and builds the request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagefleet.worker_protocol import (
    MAX_JOBS_PER_CLAIM,
    MAX_RESIDENT_COMBOS,
    MAX_RESIDENT_MODELS,
    ClaimRequest,
    WorkerCapabilities,
)

if TYPE_CHECKING:
    from imagefleet.worker.engines.diffusers_engine import DiffusersEngine
    from imagefleet.worker.loop import WorkerConfig
    from imagefleet.worker.model_cache import ModelCache


def build_claim_request(
    config: WorkerConfig,
    engine: DiffusersEngine,
    handlers: dict[str, Any],
    cache: ModelCache,
    last_combo: tuple[str | None, str | None],
    left: int | None,
) -> ClaimRequest:
    """The claim; `last_combo`: the combo key of the last job and the model the GPU then held
    (it is still warm while the engine holds that model); `left`: attempts the worker may
    still take (a batch stays within `run`'s max_jobs)."""
    resident = engine.resident_model
    combo, combo_model = last_combo
    return ClaimRequest(
        worker_id=config.worker_id,
        node_id=config.node_id,
        capabilities=WorkerCapabilities(
            gpu_name=_gpu_name(engine),
            vram_mb=int(getattr(engine, "vram_mb", 0)),
            max_pixels=config.max_pixels,
            kinds=sorted(handlers),
        ),
        resident_combos=(
            _handlers_warm(handlers)
            + (
                _listed(engine, "resident_combos")
                or ([combo] if combo and resident and combo_model == resident else [])
            )
        )[:MAX_RESIDENT_COMBOS],
        resident_models=_listed(engine, "resident_models")[:MAX_RESIDENT_MODELS]
        or ([resident] if resident else []),
        cached_models=cache.cached(),
        wait_seconds=config.claim_wait_seconds,
        pool=config.pool,
        free_disk_bytes=cache.free_bytes(),
        download_bytes_per_s=cache.download_bytes_per_s,
        max_jobs=max(1, min(config.max_batch, MAX_JOBS_PER_CLAIM, left or MAX_JOBS_PER_CLAIM)),
    )


def _handlers_warm(handlers: dict[str, Any]) -> list[str]:
    """Combo keys that handlers keep warm themselves (workflow: a deployment's process)."""
    return [key for handler in handlers.values() for key in _listed(handler, "resident_combos")]


def _listed(engine: object, method: str) -> list[str]:
    """What a combo engine reports of itself (resident combos or models); [] for others."""
    report = getattr(engine, method, None)
    return list(report()) if callable(report) else []


def _gpu_name(engine: DiffusersEngine) -> str:
    return str(getattr(engine, "device_name", None) or getattr(engine, "device", "cpu"))
