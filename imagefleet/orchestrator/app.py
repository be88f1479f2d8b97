"""The orchestrator's FastAPI application: wiring, error mapping, limits and background duties."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from imagefleet import __version__, blocking
from imagefleet.artifacts.factory import artifact_store_for
from imagefleet.blocking import run_blocking
from imagefleet.compat import a1111 as compat_a1111
from imagefleet.compat import a1111_info as compat_a1111_info
from imagefleet.compat import openai as compat_openai
from imagefleet.config import Settings
from imagefleet.kinds import job_union, kind_names, load_plugins
from imagefleet.orchestrator import (
    checkpoint_routes,
    docs_ui,
    previews,
    routes_admin,
    routes_autoscaling,
    routes_client,
    routes_comfy,
    routes_events,
    routes_usage,
    routes_worker,
)
from imagefleet.orchestrator.auth import KeyCache
from imagefleet.orchestrator.autoscaler import Autoscaler
from imagefleet.orchestrator.autoscaler_pools import PoolService
from imagefleet.orchestrator.body_limit import BodySizeLimit
from imagefleet.orchestrator.checkpoint_transitions import sweep_final_checkpoints
from imagefleet.orchestrator.error_responses import MAPPED_ERRORS, AsciiJSONResponse, error_response
from imagefleet.orchestrator.events import EventBus, start_event_bus
from imagefleet.orchestrator.hot_routes import HotRoutes
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.metrics import registry_for
from imagefleet.orchestrator.ratelimit import RateLimiter
from imagefleet.orchestrator.retention import purge_expired
from imagefleet.orchestrator.routes_deployments import router as deployments_router
from imagefleet.orchestrator.routes_overview import router as overview_router
from imagefleet.orchestrator.routes_submit import submit_router
from imagefleet.orchestrator.routes_ui import pages as ui_pages
from imagefleet.orchestrator.routes_ui import session as ui_session
from imagefleet.orchestrator.webhooks import WebhookDispatcher
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.scaling.pools import load_pools
from imagefleet.store.database import Database, DatabaseUnavailable
from imagefleet.store.listener import WorkListener

log = logging.getLogger("imagefleet.orchestrator")
# Without notifications (SQLite), how often the oldest parked claim of each kind of worker
# looks at the queue; and the longest any parked claim waits unwoken (see WorkSignal).
POLLING_RECHECK_SECONDS = 1.0
LISTENING_RECHECK_SECONDS = 10.0


def create_app(settings: Settings | None = None, *, run_duties: bool = True) -> FastAPI:
    settings = settings or Settings()
    load_plugins(settings.kind_plugins)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # As many request threads as pooled connections: no thread waits for a connection.
        own, framework = blocking.split_threads(settings.db_pool_size)
        blocking.configure(own)
        anyio.to_thread.current_default_thread_limiter().total_tokens = framework
        await run_blocking(db.upgrade if settings.migrate_on_start else db.check_schema)
        # Workers could not renew leases while this replica was down; give them one lease's
        # time to reach it again before the reaper counts them as gone.
        await run_blocking(app.state.lifecycle.grace_leases)
        # A misconfigured bucket is reported now, not at the first upload.
        await run_blocking(app.state.artifacts.check)
        await run_blocking(app.state.pools.seed, time.time())
        signal = app.state.work_signal = WorkSignal(
            LISTENING_RECHECK_SECONDS,
            listening=not db.is_sqlite,
            poll_seconds=POLLING_RECHECK_SECONDS,
        )
        stop_events = start_event_bus(app.state.event_bus, db)
        ticker = asyncio.create_task(signal.tick_forever()) if db.is_sqlite else None
        listener = None
        if not db.is_sqlite:
            loop = asyncio.get_running_loop()
            listener = WorkListener(db.url, lambda hint: signal.notify_threadsafe(loop, hint))
            listener.start()
        duties = (
            [
                asyncio.create_task(_reap_forever(app)),
                asyncio.create_task(_expire_forever(app)),
                asyncio.create_task(WebhookDispatcher(db, settings).run_forever()),
            ]
            if run_duties
            else []
        )
        if run_duties and settings.autoscale and await run_blocking(app.state.pools.pools):
            app.state.autoscaler = Autoscaler(db, settings, app.state.pools)
            duties.append(asyncio.create_task(app.state.autoscaler.run_forever()))
        try:
            yield
        finally:
            if ticker:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if listener:
                listener.stop()
            stop_events()
            for duty in duties:
                duty.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await duty
            db.dispose()

    app = FastAPI(
        default_response_class=AsciiJSONResponse,
        title="imagefleet",
        version=__version__,
        summary="Generative image jobs on a pull-based fleet of GPU workers.",
        lifespan=lifespan,
        docs_url=None,  # docs_ui serves /docs and /redoc with local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.artifacts = store = artifact_store_for(settings)
    app.state.lifecycle = JobLifecycle(db, settings, artifacts=store)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.work_signal = WorkSignal(POLLING_RECHECK_SECONDS)  # replaced at start-up
    # A bad pools file stops start-up here, naming each bad pool and field.
    pools_config = load_pools(settings.pools_file) if settings.pools_file else None
    app.state.pools = PoolService(db, pools_config, settings.lease_seconds, settings.gpu_prices)
    app.state.metrics = registry_for(
        db, app.state.pools, settings.lease_seconds, settings.tier_priority
    )
    app.state.event_bus = EventBus()
    app.include_router(submit_router(job_union()))
    app.include_router(routes_client.router)
    app.include_router(routes_worker.router)
    app.include_router(checkpoint_routes.worker_router)
    app.include_router(checkpoint_routes.client_router)
    app.include_router(previews.worker_router)  # low-resolution previews (previews.py)
    app.include_router(previews.client_router)
    app.include_router(routes_admin.router)
    app.include_router(routes_autoscaling.router)
    app.include_router(routes_usage.router)
    app.include_router(routes_usage.metrics_router)
    app.include_router(docs_ui.router)
    app.include_router(routes_events.router)
    app.include_router(compat_openai.router)
    app.include_router(compat_a1111.router)
    app.include_router(compat_a1111_info.router)
    # The dashboard at /ui, its login session and the overview it reads.
    app.include_router(ui_pages)
    app.include_router(ui_session)
    app.include_router(overview_router)
    app.include_router(routes_comfy.router)  # ComfyUI-compatible: /prompt, /history, /ws...
    app.include_router(deployments_router)  # issue 15: versioned deployments
    if settings.hot_routes:  # inside the body limit: it gets the body whole, or a 413 is sent
        app.add_middleware(HotRoutes, job_type=job_union())
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        exempt_paths=("/v1/inputs", "/upload/image"),
    )

    @app.get(
        "/healthz",
        tags=["ops"],
        summary="Liveness and database reachability",
        responses={503: {"description": "The database is unreachable"}},
    )
    def healthz() -> dict[str, str]:
        db.check()
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_without_kind_tag(error) for error in jsonable_encoder(exc.errors())]
        return AsciiJSONResponse({"detail": errors}, status_code=422)

    async def _mapped(_: Request, exc: Exception) -> Response:
        response = error_response(exc)
        if response is None:  # not one of MAPPED_ERRORS
            raise exc
        return response

    for error in MAPPED_ERRORS:
        app.add_exception_handler(error, _mapped)

    return app


def _without_kind_tag(error: dict[str, Any]) -> dict[str, Any]:
    """pydantic names the union member in a submit's error location (`body.txt2img.params`);
    the kinds' own checks say `body.params`: one location per field, whichever check speaks."""
    loc = error.get("loc")
    if isinstance(loc, list) and len(loc) > 2 and loc[0] == "body" and loc[1] in kind_names():
        return {**error, "loc": [loc[0], *loc[2:]]}
    return error


async def _reap_forever(app: FastAPI) -> None:
    """Requeues jobs of workers that stopped heartbeating. Every replica may run this at once:
    each requeue is conditional, so a job is requeued exactly once."""
    lifecycle: JobLifecycle = app.state.lifecycle
    while True:
        await asyncio.sleep(lifecycle.settings.reaper_interval_seconds)
        try:
            if await run_blocking(lifecycle.reap_expired):
                app.state.work_signal.announce()
            await run_blocking(lifecycle.fail_unservable)
        except (OperationalError, DatabaseUnavailable) as exc:
            log.warning("lease reaper: database unavailable (%s); retrying", type(exc).__name__)
        except Exception:
            log.exception("lease reaper failed; retrying")


async def _expire_forever(app: FastAPI) -> None:
    """Deletes expired jobs and files in bounded batches (see retention.py)."""
    settings: Settings = app.state.settings
    if not settings.retention_seconds:
        return
    while True:
        await asyncio.sleep(settings.retention_interval_seconds)
        try:
            await run_blocking(
                lambda: purge_expired(
                    app.state.db,
                    app.state.artifacts,
                    older_than_seconds=settings.retention_seconds,
                    now=time.time(),
                    max_batches=20,
                )
            )
            await run_blocking(sweep_final_checkpoints, app.state.db, app.state.artifacts)
        except Exception:
            log.exception("retention pass failed; retrying")
