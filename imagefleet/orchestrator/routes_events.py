"""Progress streams as server-sent events: one job's (GET /v1/jobs/{id}/events) and all of a
key's jobs' (GET /v1/events).

A stream first sends what the event log holds after the client's Last-Event-ID (the header a
browser's EventSource sends when it reconnects, or the `after` query parameter), then waits on
the event bus (orchestrator/events.py) for more. A job's stream ends after its final event;
every stream ends after `IMAGEFLEET_EVENTS_STREAM_MAX_SECONDS`, and the client resumes where
it left off, so no event is lost or repeated across reconnects and replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from imagefleet.blocking import run_blocking
from imagefleet.events_protocol import JobEvent, JobEventType
from imagefleet.orchestrator.deps import AppSettings, ClientKey, Db, Lifecycle
from imagefleet.orchestrator.events import EventBus
from imagefleet.orchestrator.openapi_errors import DocumentedRoute
from imagefleet.orchestrator.routes_client import render_jobs
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.store import events as event_sql
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey

router = APIRouter(prefix="/v1", tags=["events"], route_class=DocumentedRoute)
KEEPALIVE_SECONDS = 15.0
# A client whose connection drops reconnects after this long (the SSE `retry` field).
RECONNECT_MS = 1000
PAGE = 200
MAX_EVENT_ID = 2**31 - 1  # job_events.id is a 32-bit integer on PostgreSQL
STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A text/event-stream: `id`, `event` (a JobEventType) and `data` "
        "(a JobEvent as JSON) per event",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One server-sent event; `data` is a JobEvent as JSON.",
                    "properties": {
                        "id": {"type": "string"},
                        "event": {"type": "string", "enum": [e.value for e in JobEventType]},
                        "data": {"type": "string"},
                    },
                }
            }
        },
    }
}
LastEventId = Annotated[
    str | None,
    Header(
        pattern=r"^[0-9]{1,10}$",
        description="Resume after this event id (what EventSource sends on reconnect).",
    ),
]
After = Annotated[
    int | None,
    Query(
        ge=0, le=MAX_EVENT_ID, description="Resume after this event id (when no header can be set)."
    ),
]


def _bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.event_bus
    return bus


def _start(last_event_id: str | None, after: int | None) -> int | None:
    """Where to resume; ids are 32-bit integers, so a larger one means "after all of them"."""
    if last_event_id is not None:
        return min(int(last_event_id), MAX_EVENT_ID)
    return after


def sse(event: JobEvent) -> bytes:
    """One event in the text/event-stream format (JSON data has no newlines)."""
    data = event.model_dump_json()
    return f"id: {event.id}\nevent: {event.event.value}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    summary="Stream a job's events (server-sent events), resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
)
async def job_events(
    request: Request,
    key: ClientKey,
    job_id: str,
    lifecycle: Lifecycle,
    settings: AppSettings,
    last_event_id: LastEventId = None,
    after: After = None,
) -> StreamingResponse:
    await run_blocking(lifecycle.get, key, job_id)  # 404 before the stream starts
    stream = _job_stream(
        request, key, job_id, _start(last_event_id, after) or 0, settings.events_stream_max_seconds
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=_HEADERS)


@router.get(
    "/events",
    summary="Stream the events of all your jobs (server-sent events)",
    response_class=StreamingResponse,
    responses=STREAM_RESPONSES,
)
async def key_events(
    request: Request,
    key: ClientKey,
    db: Db,
    settings: AppSettings,
    last_event_id: LastEventId = None,
    after: After = None,
) -> StreamingResponse:
    start = _start(last_event_id, after)
    if start is None:  # a live feed: from now on
        start = await run_blocking(_last_id, db, key)
    stream = _key_stream(request, key, start, settings.events_stream_max_seconds)
    return StreamingResponse(stream, media_type="text/event-stream", headers=_HEADERS)


# Proxies must neither buffer nor cache a stream.
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _job_stream(
    request: Request, key: ApiKey, job_id: str, after: int, max_seconds: float
) -> AsyncIterator[bytes]:
    deadline = asyncio.get_running_loop().time() + max_seconds
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    async with _gone(request) as gone:
        async for chunk in _job_events(request, key, job_id, after, deadline, gone):
            yield chunk


async def _job_events(
    request: Request,
    key: ApiKey,
    job_id: str,
    after: int,
    deadline: float,
    gone: asyncio.Future[None] | None,
) -> AsyncIterator[bytes]:
    bus, db = _bus(request), request.app.state.db
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        waiter = bus.job_waiter(job_id)  # before reading: an event committed meanwhile wakes it
        rows = await run_blocking(_read_job, db, job_id, after)
        if not rows and after == 0 and (ended := await _ended_without_events(request, key, job_id)):
            yield sse(ended)  # a job that finished before this server recorded events
            return
        for row in rows:
            event = await _event(request, key, row)
            yield sse(event)
            after, last_write = row.id, loop.time()
            if event.event.is_final:
                return
        if len(rows) == PAGE:
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await bus.wait(waiter, min(remaining, KEEPALIVE_SECONDS), gone)
        if gone is not None and gone.done():
            return
        if loop.time() - last_write >= KEEPALIVE_SECONDS:
            yield b": keepalive\n\n"
            last_write = loop.time()


async def _key_stream(
    request: Request, key: ApiKey, after: int, max_seconds: float
) -> AsyncIterator[bytes]:
    deadline = asyncio.get_running_loop().time() + max_seconds
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    async with _gone(request) as gone:
        async for chunk in _key_events(request, key, after, deadline, gone):
            yield chunk


async def _key_events(
    request: Request, key: ApiKey, after: int, deadline: float, gone: asyncio.Future[None] | None
) -> AsyncIterator[bytes]:
    bus, db = _bus(request), request.app.state.db
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        waiter = bus.owner_waiter(key.id)
        rows = await run_blocking(_read_owner, db, key.id, after)
        for row in rows:
            yield sse(await _event(request, key, row))
            after, last_write = row.id, loop.time()
        if len(rows) == PAGE:
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await bus.wait(waiter, min(remaining, KEEPALIVE_SECONDS), gone)
        if gone is not None and gone.done():
            return
        if loop.time() - last_write >= KEEPALIVE_SECONDS:
            yield b": keepalive\n\n"
            last_write = loop.time()


@contextlib.asynccontextmanager
async def _gone(request: Request) -> AsyncIterator[asyncio.Future[None] | None]:
    """A future done when the client disconnects, so that a waiting stream ends at once
    instead of at its next keepalive. Servers speaking ASGI spec < 2.4 get None: Starlette
    itself listens for the disconnect there and cancels the stream."""
    spec = request.scope.get("asgi", {}).get("spec_version", "2.0")
    if tuple(map(int, spec.split("."))) < (2, 4):
        yield None
        return

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(watch())
    try:
        yield task
    finally:
        task.cancel()


async def _ended_without_events(request: Request, key: ApiKey, job_id: str) -> JobEvent | None:
    """The final event of a job that has none recorded (finished before the event log
    existed), with id 0; None for every other job."""
    lifecycle = request.app.state.lifecycle
    row = await run_blocking(lifecycle.get, key, job_id)
    if not row.status.is_final:
        return None
    job = (await run_blocking(render_jobs, request, [row]))[0]
    return JobEvent(
        id=0,
        event=JobEventType(row.status.value),
        job_id=job_id,
        created_at=to_datetime(row.finished_at or row.created_at),
        data={"status": row.status.value},
        job=job,
    )


async def _event(request: Request, key: ApiKey, row: event_sql.EventRow) -> JobEvent:
    kind = JobEventType(row.event)
    job = None
    if kind.is_final:
        lifecycle = request.app.state.lifecycle
        found = await run_blocking(lifecycle.get, key, row.job_id)
        job = (await run_blocking(render_jobs, request, [found]))[0]
    return JobEvent(
        id=row.id,
        event=kind,
        job_id=row.job_id,
        created_at=to_datetime(row.created_at),
        data=row.data,
        job=job,
    )


def _read_job(db: Database, job_id: str, after: int) -> list[event_sql.EventRow]:
    with db.read() as conn:
        return event_sql.for_job(conn, job_id, after, PAGE)


def _read_owner(db: Database, owner: str, after: int) -> list[event_sql.EventRow]:
    with db.read() as conn:
        return event_sql.for_owner(conn, owner, after, PAGE)


def _last_id(db: Database, key: ApiKey) -> int:
    with db.read() as conn:
        return event_sql.last_id_for_owner(conn, key.id)
