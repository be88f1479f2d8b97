"""Job events: what each transition tells the progress streams, and the in-process bus that
wakes streams and synchronous waits when an event is committed.

The event log is the truth (store/events.py); the bus only says "look again". A stream or a
wait takes its waiter *before* reading the log, so an event committed between its read and its
wait still wakes it. Wake-ups come from this process's commits (commit hooks) and, on
PostgreSQL, from every replica's commits (LISTEN on the events channel); a bounded re-check
timer covers the rest (SQLite shared by several processes, a listener reconnecting). Nothing
polls the database in a loop: a waiter reads when woken, or after the re-check interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection

from imagefleet.blocking import run_blocking
from imagefleet.protocol import JobStatus
from imagefleet.store import events as event_sql
from imagefleet.store.database import EVENTS_CHANNEL, Database
from imagefleet.store.jobs import JobRow
from imagefleet.store.listener import WorkListener

log = logging.getLogger("imagefleet.events")
FINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})
SQLITE_RECHECK_SECONDS = 2.0
POSTGRES_RECHECK_SECONDS = 15.0


class EventBus:
    """Per-job and per-key wake-ups for this process's event streams and waits."""

    def __init__(self, recheck_seconds: float = SQLITE_RECHECK_SECONDS) -> None:
        self.recheck_seconds = recheck_seconds
        self._events: dict[str, asyncio.Event] = {}

    def job_waiter(self, job_id: str) -> asyncio.Event:
        return self._waiter(f"job:{job_id}")

    def owner_waiter(self, owner_key_id: str) -> asyncio.Event:
        return self._waiter(f"key:{owner_key_id}")

    def notify(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Wakes whoever waits on these (job id, owner key id) pairs."""
        for job_id, owner in pairs:
            for name in (f"job:{job_id}", f"key:{owner}"):
                event = self._events.pop(name, None)
                if event is not None:
                    event.set()

    def notify_all(self) -> None:
        """Wakes every waiter (the listener reconnected: events may have been missed)."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop, pairs: list[Any]) -> None:
        """For commits made on worker threads and for the PostgreSQL listener's thread."""
        if not loop.is_closed():
            loop.call_soon_threadsafe(self.notify, [tuple(pair) for pair in pairs])

    async def wait(
        self, waiter: asyncio.Event, timeout: float, until: asyncio.Future[None] | None = None
    ) -> None:
        """Returns when woken, when `until` is done (the client went away), or after
        `min(timeout, recheck_seconds)`, whichever comes first."""
        woken = asyncio.ensure_future(waiter.wait())
        waits: set[asyncio.Future[Any]] = {woken} if until is None else {woken, until}
        try:
            await asyncio.wait(
                waits,
                timeout=max(0.0, min(timeout, self.recheck_seconds)),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()

    def _waiter(self, name: str) -> asyncio.Event:
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = asyncio.Event()
        return event


def start_event_bus(bus: EventBus, db: Database) -> Callable[[], None]:
    """Connects the bus to this process's commits and, on PostgreSQL, to every replica's
    NOTIFYs; returns the function that disconnects it. Runs inside the app's event loop."""
    loop = asyncio.get_running_loop()

    def on_commit(pairs: list[Any]) -> None:
        bus.notify_threadsafe(loop, pairs)

    db.commit_hooks.append(on_commit)
    listener = None
    if not db.is_sqlite:
        bus.recheck_seconds = POSTGRES_RECHECK_SECONDS

        def on_payload(payload: str) -> None:
            job_id, _, owner = payload.partition(" ")
            bus.notify_threadsafe(loop, [(job_id, owner)])

        def on_connect(_: object) -> None:
            loop.call_soon_threadsafe(bus.notify_all)

        listener = WorkListener(db.url, on_connect, channel=EVENTS_CHANNEL, on_payload=on_payload)
        listener.start()

    def stop() -> None:
        if on_commit in db.commit_hooks:
            db.commit_hooks.remove(on_commit)
        if listener:
            listener.stop()

    return stop


async def wait_for_end(
    bus: EventBus, lifecycle: Any, owner: Any, job_id: str, timeout: float
) -> JobRow | None:
    """The job once it is final, or None when `timeout` seconds pass first. Reads the job
    when its events wake the bus (and at the re-check interval), never in a tight loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        waiter = bus.job_waiter(job_id)
        row: JobRow = await run_blocking(lifecycle.get, owner, job_id)
        if row.status.is_final:
            return row
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await bus.wait(waiter, remaining)


# --- what transitions record (each in the caller's transaction) ---------------------------------


def queued(conn: Connection, row: JobRow, now: float, *, retry: bool = False) -> None:
    data = queued_data(row.attempts)
    if retry and row.error_code:
        data["last_error"] = {"code": row.error_code, "message": row.error_message or ""}
    _record(conn, row, "queued", data, now)


def queued_data(attempts: int) -> dict[str, Any]:
    """A queued event's data (a new job's is written by its submit's statement)."""
    return {"status": JobStatus.queued.value, "attempts": attempts}


def succeeded_data() -> dict[str, Any]:
    """A success's event data (see `final`): the completing statement writes it."""
    return {"status": JobStatus.succeeded.value}


def final(conn: Connection, row: JobRow, now: float) -> None:
    """succeeded, failed or cancelled: the stream renders the whole job (with fresh output
    URLs) when it sends this, so only the status is stored."""
    data: dict[str, Any] = {"status": row.status.value}
    if row.error_code and row.status is not JobStatus.succeeded:
        data["error"] = {"code": row.error_code, "message": row.error_message or ""}
    _record(conn, row, row.status.value, data, now)


def _record(conn: Connection, row: JobRow, event: str, data: dict[str, Any], now: float) -> None:
    event_sql.record(
        conn, job_id=row.id, owner_key_id=row.owner_key_id, event=event, data=data, now=now
    )
