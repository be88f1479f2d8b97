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
Nobody here hears of a job another process queued on the same SQLite file: `tick_forever`
then wakes the oldest waiter of each profile every `poll_seconds` (1 s), and the chain above
drains whatever it finds, so 100 parked claims cost a look per profile per second, not 100.
`wait_seconds` bounds any single wait (a safety net: on PostgreSQL, LISTEN/NOTIFY reaches
every replica).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Callable

from imagefleet.orchestrator.empty_looks import EmptyLooks, WaiterProfile
from imagefleet.store.database import WorkHint

__all__ = ["Waiter", "WaiterProfile", "WorkSignal"]


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

    def __init__(
        self, wait_seconds: float = 10.0, *, listening: bool = False, poll_seconds: float = 1.0
    ) -> None:
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        # True when the database's notifications (PostgreSQL NOTIFY) reach this replica for
        # every change, its own included: `announce` then leaves the wake-up to them.
        self.listening = listening
        self._waiters: OrderedDict[Waiter, None] = OrderedDict()  # oldest first
        # Claims of each profile parked in `wait` now (read from other threads too).
        self._parked: Counter[WaiterProfile] = Counter()
        # Every announcement of work goes through `notify`; the claims read it here.
        self.empty_looks = EmptyLooks()

    def waiter(self, profile: WaiterProfile) -> Waiter:
        waiter = Waiter(profile)
        self._waiters[waiter] = None
        return waiter

    async def wait(self, waiter: Waiter, timeout: float) -> bool:
        """Parks a claim that got no job until it is woken or `timeout` passes; whether it
        was woken."""
        profile = waiter.profile
        self._parked[profile] += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout=timeout)
        finally:
            self._parked[profile] -= 1
            if not self._parked[profile]:
                del self._parked[profile]
        return waiter.event.is_set()

    def parked(self, profile: WaiterProfile) -> bool:
        """Whether a claim of a worker with this profile is parked here: its worker is idle,
        its look having found no job it could run that no other claim held. Safe from any
        thread (one read)."""
        return self._parked.get(profile, 0) > 0

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
        oldest waiter of each distinct profile. Recorded in `empty_looks` too. A job a claim
        here already took wakes nobody (`EmptyLooks.announce`)."""
        if not self.empty_looks.announce(hint):
            return
        woke = self._wake(hint)
        if hint is not None and hint.job_id is not None:
            self.empty_looks.woke_for(hint.job_id, woke)

    def _wake(self, hint: WorkHint | None) -> bool:
        """Whether a waiter was woken."""
        if hint is not None:
            return self._wake_first(lambda w: w.profile.can_run(hint), hint)
        seen: set[WaiterProfile] = set()
        for waiter in list(self._waiters):
            if not waiter.woken and waiter.profile not in seen:
                seen.add(waiter.profile)
                waiter.wake(None)
        return bool(seen)

    def announce(self, hint: WorkHint | None = None) -> None:
        """This process queued work: wake a waiter here, unless the database's notification
        will (then a second wake-up would cost a second claim). The empty looks here end at
        once either way: the notification comes a moment after the commit, and a claim sent
        here right after the submit was answered must not go by a look from before it."""
        if self.listening:
            self.empty_looks.announce(hint)
        else:
            self.notify(hint)

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop, hint: WorkHint | None) -> None:
        """For callers on other threads (the PostgreSQL listener)."""
        loop.call_soon_threadsafe(self.notify, hint)

    async def tick_forever(self) -> None:
        """Without database notifications (SQLite): the oldest waiter of each profile looks
        at the queue every `poll_seconds`, for jobs other processes queued."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            # A look, not an announcement: the woken claims look in full (`woken`), and an
            # empty look they find still stands for the claims that were not woken.
            self._wake(None)

    def waiting(self) -> int:
        return len(self._waiters)

    def _wake_first(self, suits: Callable[[Waiter], bool], hint: WorkHint | None) -> bool:
        for waiter in self._waiters:
            if not waiter.woken and suits(waiter):
                waiter.wake(hint)
                return True
        return False
