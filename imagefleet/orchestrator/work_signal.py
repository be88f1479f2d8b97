"""Wakes long-polling claims in this process when work may have arrived."""

from __future__ import annotations

import asyncio


class WorkSignal:
    """A claimer takes `waiter()` *before* looking at the queue, so a submit that lands between
    its look and its wait still wakes it. `recheck_seconds` bounds a wait that nobody wakes:
    with SQLite, submits made by another process wake nobody, so claims look every second; on
    PostgreSQL, LISTEN/NOTIFY wakes claims on every replica and the timer is only a safety net.
    """

    def __init__(self, recheck_seconds: float = 1.0) -> None:
        self._event = asyncio.Event()
        self.recheck_seconds = recheck_seconds

    def waiter(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """For callers on other threads (the PostgreSQL listener)."""
        loop.call_soon_threadsafe(self.notify)
