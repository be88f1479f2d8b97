"""Wakes long-polling claims in this process when work may have arrived: one suitable waiter
per job, not all of them.

Parked claims wait in one FIFO per replica, each with what its worker can run (kinds, pixels,
VRAM: the hard limits the claim's SQL applies). A new job wakes the longest-waiting claim that
can run it; a replica none of whose waiters can run it wakes nobody and leaves the job to the
replicas that can. With 100 idle workers a submit then costs one claim per replica, not 100.

Two rules keep a wake-up from being lost:
- a claimer takes its waiter *before* looking at the queue, so a job that lands between its
  look and its wait still wakes it (the wait then returns at once and it looks again);
- a woken claimer that leaves with a job (maybe another one than the job it was woken for), or
  leaves without looking again, passes its wake-up on to the next suitable waiter. The chain
  ends at a woken claim that finds nothing: then nothing it could run is left queued.
`recheck_seconds` bounds a wait nobody wakes: with SQLite, submits made by another process
wake nobody here, so claims look every second; on PostgreSQL, LISTEN/NOTIFY reaches every
replica and the timer is only a safety net.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from imagefleet.store.database import WorkHint


@dataclass(frozen=True)
class WaiterProfile:
    """What a parked claim's worker can run."""

    kinds: frozenset[str]
    max_pixels: int
    vram_mb: int  # 0: not reported, VRAM requirements not applied (as in the claim's SQL)

    def can_run(self, hint: WorkHint) -> bool:
        return (
            hint.kind in self.kinds
            and hint.pixels <= self.max_pixels
            and (not self.vram_mb or not hint.vram_mb or hint.vram_mb <= self.vram_mb)
        )


class Waiter:
    """One parked claim. `hint` says what woke it (None: a wake-up for anything it can run)."""

    __slots__ = ("event", "hint", "profile", "woken")

    def __init__(self, profile: WaiterProfile) -> None:
        self.profile = profile
        self.event = asyncio.Event()
        self.woken = False
        self.hint: WorkHint | None = None

    def wake(self, hint: WorkHint | None) -> None:
        self.woken = True
        self.hint = hint
        self.event.set()


class WorkSignal:
    """The replica's parked claims. Used from the event loop's thread only; other threads go
    through `notify_threadsafe`."""

    def __init__(self, recheck_seconds: float = 1.0, *, listening: bool = False) -> None:
        self.recheck_seconds = recheck_seconds
        # True when the database's notifications (PostgreSQL NOTIFY) reach this replica for
        # every change, its own included: `announce` then leaves the wake-up to them.
        self.listening = listening
        self._waiters: OrderedDict[Waiter, None] = OrderedDict()  # oldest first

    def waiter(self, profile: WaiterProfile) -> Waiter:
        waiter = Waiter(profile)
        self._waiters[waiter] = None
        return waiter

    def release(self, waiter: Waiter, *, pass_on: bool) -> None:
        """Takes the waiter out of the queue. With `pass_on`, a wake-up it got and did not use
        for a fresh look at the queue goes to the next suitable waiter."""
        self._waiters.pop(waiter, None)
        if pass_on and waiter.woken:
            if waiter.hint is not None:
                self.notify(waiter.hint)
            else:
                self._wake_first(lambda w: w.profile == waiter.profile, None)

    def notify(self, hint: WorkHint | None = None) -> None:
        """Work may have arrived: for a known job, wake the oldest waiter that can run it;
        for an unknown change (a reconnect, a requeue whose job is not described), wake the
        oldest waiter of each distinct profile."""
        if hint is not None:
            self._wake_first(lambda w: w.profile.can_run(hint), hint)
            return
        seen: set[WaiterProfile] = set()
        for waiter in list(self._waiters):
            if not waiter.woken and waiter.profile not in seen:
                seen.add(waiter.profile)
                waiter.wake(None)

    def announce(self, hint: WorkHint | None = None) -> None:
        """This process queued work: wake a waiter here, unless the database's notification
        will (then a second wake-up would cost a second claim)."""
        if not self.listening:
            self.notify(hint)

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop, hint: WorkHint | None) -> None:
        """For callers on other threads (the PostgreSQL listener)."""
        loop.call_soon_threadsafe(self.notify, hint)

    def waiting(self) -> int:
        return len(self._waiters)

    def _wake_first(self, suits: Callable[[Waiter], bool], hint: WorkHint | None) -> None:
        for waiter in self._waiters:
            if not waiter.woken and suits(waiter):
                waiter.wake(hint)
                return
