"""What a replica knows about its idle workers' looks at the queue, so that a crowd of them
re-asking at once costs one look per kind of worker, not one each.

A worker's long poll ends after `wait_seconds` and it asks again. A fleet that went idle
together asks again together: 100 workers too small for the queued jobs each ran the claim's
whole candidate search within a couple of seconds, and on one core that held up the one
worker that could run them for over a second (docs/benchmarks.md, "Claims while workers idle
in long polls"). Yet when a worker of the same profile (the kinds, pixels and VRAM the claim's
SQL filters on) looked a moment ago and found nothing, and nothing such a worker could run has
been announced since, another look finds nothing either, with two exceptions handled here:

- **what a look found depends on the node** only for jobs that were tried before (a job is not
  offered again on a node it failed on) and only those wait out a retry back-off: an empty look
  is not taken as the answer for others while any retried job is queued (`ClaimBlocks`);
- **rows another claim has locked** (SKIP LOCKED on PostgreSQL) are not seen by a look, so only
  a look whose search matched no job at all counts as empty, not one whose matches were taken.

An empty look stands for `EMPTY_LOOK_SECONDS` (a later look then runs again, so nothing is
hidden for longer), and an announcement of work the profile can run (a submit, heard from the
database on PostgreSQL) ends it at once; an announcement of unknown work ends every one.

**A job a claim here already took** is no news: its announcement neither ends an empty look nor
wakes a parked claim (`WorkSignal.notify`), and a claim woken for it need not look. On a busy
replica most of a new job's announcements arrive while a claim that did not wait (a worker
that just completed one) is taking it; the woken claim then ran a whole claim transaction to
find nothing (half a transaction per job on PostgreSQL with one replica, docs/benchmarks.md).
Only a claim committed on this replica counts: a job another replica took is still news here.

**A job a woken claim is on its way to take** is no news for the claims that did not wait
either: the announcement woke one claim for it (`WorkSignal`), and a busy worker's claim that
looked as well would race it, one of the two finding nothing. Once the woken claim is done
without that job (it took another, found it taken elsewhere, left it for a worker that holds
its models, or its worker went away), the job is news again until a look here finds it gone.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from imagefleet.store.database import WorkHint
from imagefleet.store.nodes import ClaimBlocks
from imagefleet.worker_protocol import ClaimRequest

EMPTY_LOOK_SECONDS = 1.0
# Distinct worker profiles remembered; past this (workers come and go) all are forgotten, which
# only means the next looks run in full.
MAX_PROFILES = 10_000
# Jobs taken here that are remembered: long enough for the announcement of a job taken before
# it arrived (PostgreSQL's NOTIFY comes a moment after the commit) and the claim woken by it.
TAKEN_SECONDS = 10.0
MAX_TAKEN = 10_000


@dataclass(frozen=True)
class WaiterProfile:
    """What a worker can run, as far as the claim's hard limits go."""

    kinds: frozenset[str]
    max_pixels: int
    vram_mb: int  # 0: not reported, VRAM requirements not applied (as in the claim's SQL)

    def can_run(self, hint: WorkHint) -> bool:
        return (
            hint.kind in self.kinds
            and hint.pixels <= self.max_pixels
            and (not self.vram_mb or not hint.vram_mb or hint.vram_mb <= self.vram_mb)
        )


@dataclass(slots=True)
class _Announced:
    """An announced job not seen taken here: when, what it needs, and whether a woken claim is
    on its way to take it."""

    at: float
    hint: WorkHint
    fetching: bool = False


class EmptyLooks:
    """Per replica, shared by the event loop (announcements) and the request threads (looks),
    hence the lock. Times are this process's monotonic clock: a look's start is taken before its
    transaction reads, an announcement's after the work was committed, so work committed too late
    for a look is always announced after that look began."""

    def __init__(
        self,
        fresh_seconds: float = EMPTY_LOOK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._empty_since: dict[WaiterProfile, float] = {}  # start of the last empty look
        self._announced: dict[WaiterProfile, float] = {}  # last work announced it could run
        self._anything_at = float("-inf")  # last announcement of unknown work
        # Announced jobs not (yet) seen taken here, oldest first.
        self._pending: OrderedDict[str, _Announced] = OrderedDict()
        self._taken: OrderedDict[str, float] = OrderedDict()  # job -> when a claim here took it

    def start(self, profile: WaiterProfile) -> float:
        """A look begins: its start, with the profile from now on told of announcements."""
        with self._lock:
            if len(self._announced) >= MAX_PROFILES:
                self._announced.clear()
                self._empty_since.clear()
            self._announced.setdefault(profile, float("-inf"))
            return self.clock()

    def found_nothing(self, profile: WaiterProfile, started: float) -> None:
        """The look that began at `started` matched no job this profile could run."""
        with self._lock:
            if profile in self._announced and started > self._empty_since.get(profile, -1e300):
                self._empty_since[profile] = started

    def announce(self, hint: WorkHint | None) -> bool:
        """Work was queued: ends the empty looks of the profiles that can run it (every one for
        unknown work). False when it is no news: a claim here already took the job."""
        with self._lock:
            now = self.clock()
            if hint is None:
                self._anything_at = now
                return True
            if hint.job_id is not None:
                if hint.job_id in self._taken:
                    return False
                self._pending[hint.job_id] = _Announced(now, hint)
                self._pending.move_to_end(hint.job_id)
                self._forget(now)
                return True
            for profile in self._announced:
                if profile.can_run(hint):
                    self._announced[profile] = now
            return True

    def taken(self, job_ids: Iterable[str]) -> None:
        """A claim here took these jobs and committed: their announcements are no news."""
        with self._lock:
            now = self.clock()
            for job_id in job_ids:
                self._pending.pop(job_id, None)
                self._taken[job_id] = now
                self._taken.move_to_end(job_id)
            self._forget(now)

    def woke_for(self, job_id: str, woke: bool) -> None:
        """Whether a claim is now on its way to take this announced job (`woke`), or no
        longer is (the woken claim is done without it)."""
        with self._lock:
            announced = self._pending.get(job_id)
            if announced is not None:
                announced.fetching = woke

    def was_taken(self, job_id: str) -> bool:
        """Whether a claim here took this job (within TAKEN_SECONDS)."""
        with self._lock:
            return job_id in self._taken

    def _forget(self, now: float) -> None:
        """Drops what no longer matters: announcements older than any empty look that still
        stands (`nothing_new` only weighs those after the look began), and old takes."""
        pending = self._pending
        while pending and now - next(iter(pending.values())).at >= self.fresh_seconds:
            pending.popitem(last=False)
        taken = self._taken
        while taken and (
            len(taken) > MAX_TAKEN or now - next(iter(taken.values())) >= TAKEN_SECONDS
        ):
            taken.popitem(last=False)

    def nothing_new(self, profile: WaiterProfile) -> bool:
        """Whether a look for this profile would find what the last one did: nothing (it began
        under `fresh_seconds` ago and nothing the profile can run was announced since, apart
        from jobs claims here took or a woken claim is taking)."""
        with self._lock:
            since = self._empty_since.get(profile)
            if since is None or self.clock() - since >= self.fresh_seconds:
                return False
            announced = self._announced.get(profile, float("inf"))
            if announced >= since or self._anything_at >= since:
                return False
            return not any(
                not job.fetching and job.at >= since and profile.can_run(job.hint)
                for job in self._pending.values()
            )


class ClaimLook:
    """One claim's use of the replica's empty looks (`orchestrator.empty_looks`)."""

    __slots__ = ("looks", "profile", "started", "woken")

    def __init__(self, profile: WaiterProfile, looks: EmptyLooks | None, woken: bool) -> None:
        self.profile = profile
        self.looks = looks
        self.woken = woken
        # Taken before any read of this claim: see EmptyLooks.
        self.started = looks.start(profile) if looks is not None else 0.0

    def skips_unread(self) -> bool:
        """`skips` before this claim has read anything: the empty look it relies on was one
        with no retried job queued (`found_nothing`), under EMPTY_LOOK_SECONDS ago, and an
        announcement of work since (a requeue included) would have ended it."""
        return self.looks is not None and not self.woken and self.looks.nothing_new(self.profile)

    def stale_wake(self, woken_for: str | None) -> bool:
        """Whether this claim may stop before it reads anything: woken for a job a claim here
        took since (`woken_for`), or not woken while `skips_unread` holds."""
        if self.looks is not None and self.woken:
            return woken_for is not None and self.looks.was_taken(woken_for)
        return self.skips_unread()

    def skips(self, blocks: ClaimBlocks) -> bool:
        """Whether to stop here: a worker like this one just found nothing, and what it found
        holds for this node too. A woken claim always looks: work was announced for it, or
        (SQLite) it is the one look per profile per poll that finds other processes' jobs."""
        return not blocks.retried_queued and self.skips_unread()

    def found_nothing(self, blocks: ClaimBlocks) -> None:
        if self.looks is not None and not blocks.retried_queued:
            self.looks.found_nothing(self.profile, self.started)


def profile_of(request: ClaimRequest) -> WaiterProfile:
    """What the claiming worker can run, as the claim's hard limits see it."""
    capabilities = request.capabilities
    return WaiterProfile(
        frozenset(capabilities.kinds), capabilities.max_pixels, capabilities.vram_mb
    )
