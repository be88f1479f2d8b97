"""The orchestrator's FastAPI application: wiring, error mapping, limits and background duties."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagefleet import __version__
from imagefleet.artifacts.base import ArtifactStore, ArtifactStoreError, ArtifactStoreUnavailable
from imagefleet.artifacts.local import LocalArtifactStore
from imagefleet.artifacts.s3_config import S3Config
from imagefleet.config import Settings
from imagefleet.orchestrator import docs_ui, routes_admin, routes_client, routes_worker
from imagefleet.orchestrator.errors import (
    Conflict,
    InvalidField,
    NotFound,
    QuotaExceeded,
    StaleAttempt,
)
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.ratelimit import RateLimiter
from imagefleet.orchestrator.retention import purge_expired
from imagefleet.orchestrator.webhooks import WebhookDispatcher
from imagefleet.store.database import Database, DatabaseUnavailable
from imagefleet.store.listener import WorkListener

log = logging.getLogger("imagefleet.orchestrator")
# How often a waiting claim looks at the queue without being woken. With SQLite, submits made
# by another process wake nobody, so it looks every second; on PostgreSQL, LISTEN/NOTIFY wakes
# claims on every replica and the timer is only a safety net.
POLLING_RECHECK_SECONDS = 1.0
LISTENING_RECHECK_SECONDS = 10.0


class WorkSignal:
    """Wakes long-polling claims in this process when work may have arrived.

    A claimer takes `waiter()` *before* looking at the queue, so a submit that lands between its
    look and its wait still wakes it.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """For callers on other threads (the PostgreSQL listener)."""
        loop.call_soon_threadsafe(self.notify)


class BodySizeLimit:
    """Refuses JSON bodies over the limit with 413 before they are read into memory. Upload
    routes enforce their own, larger limit while streaming to the artifact store."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_method: str = "PUT") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_method = exempt_method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == self.exempt_method:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 echoes the offending input, and input with a lone
    surrogate cannot be written as UTF-8 (it would turn a validation error into a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(status: int, detail: Any) -> JSONResponse:
    return AsciiJSONResponse({"detail": detail}, status_code=status)


def artifact_store_for(settings: Settings) -> ArtifactStore:
    """The configured artifact store: S3-compatible when IMAGEFLEET_S3_BUCKET is set (see
    docs/storage.md), else the local directory."""
    s3 = S3Config.from_env()
    if s3 is None:
        return LocalArtifactStore(settings.artifacts_path)
    try:
        from imagefleet.artifacts.s3 import S3ArtifactStore
    except ImportError as exc:
        raise ArtifactStoreUnavailable(
            "IMAGEFLEET_S3_BUCKET is set but boto3 is missing: pip install 'imagefleet[s3]'"
        ) from exc
    return S3ArtifactStore(s3)


def create_app(settings: Settings | None = None, *, run_duties: bool = True) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(db.upgrade)
        # Workers could not renew leases while this replica was down; give them one lease's
        # time to reach it again before the reaper counts them as gone.
        await run_in_threadpool(app.state.lifecycle.grace_leases)
        # A misconfigured bucket is reported now, not at the first upload.
        await run_in_threadpool(app.state.artifacts.check)
        signal = app.state.work_signal = WorkSignal()
        listener = None
        if not db.is_sqlite:
            loop = asyncio.get_running_loop()
            listener = WorkListener(db.url, lambda: signal.notify_threadsafe(loop))
            listener.start()
            app.state.claim_recheck_seconds = LISTENING_RECHECK_SECONDS
        duties = (
            [
                asyncio.create_task(_reap_forever(app)),
                asyncio.create_task(_expire_forever(app)),
                asyncio.create_task(WebhookDispatcher(db, settings).run_forever()),
            ]
            if run_duties
            else []
        )
        try:
            yield
        finally:
            if listener:
                listener.stop()
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
    app.state.lifecycle = JobLifecycle(db, settings)
    app.state.artifacts = store = artifact_store_for(settings)
    app.state.direct_uploads = store.direct_multipart_threshold is not None
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.work_signal = WorkSignal()
    app.state.claim_recheck_seconds = POLLING_RECHECK_SECONDS
    app.include_router(routes_client.router)
    app.include_router(routes_worker.router)
    app.include_router(routes_admin.router)
    app.include_router(docs_ui.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    def healthz() -> dict[str, str]:
        db.check()
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.exception_handler(InvalidField)
    async def _invalid(_: Request, exc: InvalidField) -> JSONResponse:
        return _error(422, [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}])

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(StaleAttempt)
    async def _stale(_: Request, exc: StaleAttempt) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)},
            status_code=429,
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        )

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(ArtifactStoreError)
    async def _store_down(_: Request, exc: ArtifactStoreError) -> JSONResponse:
        log.warning("artifact store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the artifact store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    return app


async def _reap_forever(app: FastAPI) -> None:
    """Requeues jobs of workers that stopped heartbeating. Every replica may run this at once:
    each requeue is conditional, so a job is requeued exactly once."""
    lifecycle: JobLifecycle = app.state.lifecycle
    while True:
        await asyncio.sleep(lifecycle.settings.reaper_interval_seconds)
        try:
            if await run_in_threadpool(lifecycle.reap_expired):
                app.state.work_signal.notify()
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
            await run_in_threadpool(
                lambda: purge_expired(
                    app.state.db,
                    app.state.artifacts,
                    older_than_seconds=settings.retention_seconds,
                    now=time.time(),
                    max_batches=20,
                )
            )
        except Exception:
            log.exception("retention pass failed; retrying")
