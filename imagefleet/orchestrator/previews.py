"""Low-resolution previews of a running job: a worker that makes them (`IMAGEFLEET_PREVIEW_EVERY`
steps, see worker/preview.py) PUTs a small JPEG of the current latents; the page that watches
the job GETs the newest one.

Kept in this replica's memory, newest per job, at most `MAX_JOBS` jobs (least recently
updated dropped first), never in the database: a preview is worth something for the seconds
the job runs and nothing after, and writing kilobytes per step into the event log would cost
every replica. With several replicas behind a load balancer a page may ask one that never got
the preview and see none (404): previews are best-effort by design.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from imagefleet.blocking import run_blocking
from imagefleet.errors import NotFound, PayloadTooLarge, UnsupportedMediaType
from imagefleet.orchestrator.deps import ClientKey, Db, Lifecycle, WorkerKey
from imagefleet.orchestrator.openapi_errors import DocumentedRoute, error_responses
from imagefleet.store import attempts as attempt_sql
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey

# A 64-pixel JPEG is 1-3 KB; the bound leaves room and keeps a misbehaving worker cheap.
MAX_BYTES = 16 * 1024
MAX_JOBS = 512
TYPES = ("image/jpeg", "image/png")


@dataclass(frozen=True)
class Preview:
    attempt_id: str
    step: int
    total_steps: int
    content_type: str
    data: bytes


class PreviewStore:
    """The newest preview of each job, bounded (LRU by update)."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._by_job: OrderedDict[str, Preview] = OrderedDict()

    def put(self, job_id: str, preview: Preview) -> None:
        with self._lock:
            self._by_job.pop(job_id, None)
            self._by_job[job_id] = preview
            while len(self._by_job) > self.max_jobs:
                self._by_job.popitem(last=False)

    def get(self, job_id: str) -> Preview | None:
        with self._lock:
            return self._by_job.get(job_id)


def store_of(request: Request) -> PreviewStore:
    """The app's store, made on first use (no start-up wiring needed)."""
    state = request.app.state
    if not hasattr(state, "previews"):
        state.previews = PreviewStore()
    store: PreviewStore = state.previews
    return store


worker_router = APIRouter(prefix="/v1/worker", tags=["worker"], route_class=DocumentedRoute)
client_router = APIRouter(prefix="/v1", tags=["client"], route_class=DocumentedRoute)


def _running_attempt(db: Database, key: ApiKey, attempt_id: str) -> attempt_sql.AttemptRow:
    with db.read() as conn:
        attempt = attempt_sql.get_attempt(conn, attempt_id)
    if attempt is None or attempt.worker_key_id != key.id:
        raise NotFound(f"no attempt {attempt_id!r} for this worker key")
    return attempt


@worker_router.put(
    "/attempts/{attempt_id}/preview",
    status_code=204,
    summary="Report a low-resolution preview of the running attempt (raw JPEG/PNG body)",
    responses=error_responses(413, 415, 422),
)
async def put_preview(
    request: Request, key: WorkerKey, db: Db, attempt_id: str, step: int = 0, total_steps: int = 0
) -> Response:
    attempt = await run_blocking(_running_attempt, db, key, attempt_id)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in TYPES:
        raise UnsupportedMediaType(f"a preview is {' or '.join(TYPES)}, got {content_type!r}")
    data = await request.body()
    if len(data) > MAX_BYTES:
        raise PayloadTooLarge(f"a preview is at most {MAX_BYTES} bytes, got {len(data)}")
    if attempt.ended_at is None:  # a late one from an attempt that ended is dropped
        preview = Preview(attempt.id, step, total_steps, content_type, data)
        store_of(request).put(attempt.job_id, preview)
    return Response(status_code=204)


@client_router.get(
    "/jobs/{job_id}/preview",
    summary="The newest low-resolution preview of a running job (404 when there is none)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_preview(
    request: Request, key: ClientKey, job_id: str, lifecycle: Lifecycle
) -> Response:
    await run_blocking(lifecycle.get, key, job_id)  # the owner's (or an admin's) only
    preview = store_of(request).get(job_id)
    if preview is None:
        raise NotFound(f"job {job_id} has no preview (yet, or on this replica)")
    return Response(
        preview.data,
        media_type=preview.content_type,
        headers={
            "Cache-Control": "no-store",
            "X-Imagefleet-Preview-Step": str(preview.step),
            "X-Imagefleet-Preview-Total-Steps": str(preview.total_steps),
        },
    )
