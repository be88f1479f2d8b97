"""The simulated queue and its indexes: what the orchestrator's SQL preselection does with table
indexes, done in memory, so that a claim gathers a bounded candidate set (`Selection`) without
scanning the queue.

Indexes: per tier, the fair tags in order (`TagOrder`) and the arrival order (plus a heap of
requeued jobs, which keep their original submit time); per combo and per checkpoint, the arrival
order. Claimed jobs are left in place and skipped (lazy deletion); a deque is compacted when it
holds more dead entries than live ones.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice

from imagefleet.scheduling.decisions import Selection
from imagefleet.scheduling.inputs import Candidate, WorkerView

QUEUED, RUNNING, DONE = 0, 1, 2
# A probe looks at most this many entries past the ones it keeps (jobs the worker cannot run).
SCAN_SLACK = 32
# Lowest fair-tag entries of a tier kept in a sorted list in front of the tier's heap.
HEAD_SIZE = 16


class SimJob:
    """A job's mutable simulation state around its (frozen) policy candidate."""

    __slots__ = (
        "attempts",
        "candidate",
        "checkpoint",
        "combo",
        "first_claim",
        "index",
        "seq",
        "state",
        "tag",
        "tier",
    )

    def __init__(
        self, index: int, candidate: Candidate, checkpoint: str, tier: int, tag: float
    ) -> None:
        self.index = index
        self.candidate = candidate
        self.checkpoint = checkpoint
        self.combo = candidate.combo_key
        self.tier = tier
        self.tag = tag
        self.state = QUEUED
        self.first_claim = -1.0
        self.attempts = 0
        self.seq = index


FairEntry = tuple[float, int, "SimJob"]


class TagOrder:
    """A tier's jobs by (fair tag, arrival): a heap whose lowest entries are kept apart, sorted,
    in `head` (every head entry sorts before every heap entry). Every claim reads the tier's
    fair head; reading a short sorted list costs far less than popping the heap and pushing
    back. The entries, and the order in which a scan meets them, are the plain heap's."""

    __slots__ = ("head", "rest")

    def __init__(self) -> None:
        self.head: list[FairEntry] = []
        self.rest: list[FairEntry] = []

    def push(self, entry: FairEntry) -> None:
        head = self.head
        if head and entry < head[-1]:
            insort(head, entry)
            if len(head) > HEAD_SIZE:
                heapq.heappush(self.rest, head.pop())
        else:
            heapq.heappush(self.rest, entry)

    def lowest(self) -> FairEntry | None:
        """The lowest entry of a queued job; entries of claimed jobs met on the way are dropped."""
        head = self.head
        while head and head[0][2].state != QUEUED:
            del head[0]
        if head:
            return head[0]
        rest = self.rest
        while rest and rest[0][2].state != QUEUED:
            heapq.heappop(rest)
        return rest[0] if rest else None

    def trim(self) -> None:
        head = self.head
        while len(head) > HEAD_SIZE:
            heapq.heappush(self.rest, head.pop())


class SimQueue:
    def __init__(self, tiers: int, fair_index: bool) -> None:
        self.fair_index = fair_index
        self.fair = [TagOrder() for _ in range(tiers)]
        self.arrivals: list[deque[SimJob]] = [deque() for _ in range(tiers)]
        self.requeued: list[list[tuple[float, int, SimJob]]] = [[] for _ in range(tiers)]
        self.by_combo: dict[str, deque[SimJob]] = {}
        self.by_checkpoint: dict[str, deque[SimJob]] = {}
        self.combo_count: dict[str, int] = {}
        self.checkpoint_count: dict[str, int] = {}
        self.tier_count = [0] * tiers
        self.size = 0

    # --- membership -----------------------------------------------------------------------

    def add(self, job: SimJob) -> None:
        job.state = QUEUED
        tier = job.tier
        if self.fair_index:
            self.fair[tier].push((job.tag, job.seq, job))
        self.arrivals[tier].append(job)
        self._index(job, append=True)

    def requeue(self, job: SimJob) -> None:
        """Back in the queue after a lost attempt, with its original submit time."""
        job.state = QUEUED
        tier = job.tier
        if self.fair_index:
            self.fair[tier].push((job.tag, job.seq, job))
        heapq.heappush(self.requeued[tier], (job.candidate.queued_since, job.seq, job))
        self._index(job, append=False)

    def _index(self, job: SimJob, append: bool) -> None:
        for key, index, counts in (
            (job.combo, self.by_combo, self.combo_count),
            (job.checkpoint, self.by_checkpoint, self.checkpoint_count),
        ):
            entries = index.get(key)
            if entries is None:
                entries = index[key] = deque()
            if append:
                entries.append(job)
            else:
                entries.appendleft(job)
            counts[key] = counts.get(key, 0) + 1
        self.tier_count[job.tier] += 1
        self.size += 1

    def take(self, job: SimJob) -> None:
        """The job was claimed: it leaves every index (lazily)."""
        job.state = RUNNING
        for key, index, counts in (
            (job.combo, self.by_combo, self.combo_count),
            (job.checkpoint, self.by_checkpoint, self.checkpoint_count),
        ):
            left = counts[key] - 1
            if left:
                counts[key] = left
                entries = index[key]
                if len(entries) > 2 * left + SCAN_SLACK:
                    index[key] = deque(j for j in entries if j.state == QUEUED)
            else:
                del counts[key]
                del index[key]
        tier = job.tier
        self.tier_count[tier] -= 1
        self.size -= 1
        arrivals = self.arrivals[tier]
        if len(arrivals) > 2 * self.tier_count[tier] + SCAN_SLACK:
            self.arrivals[tier] = deque(j for j in arrivals if j.state == QUEUED)

    def lowest_tag(self, tier: int) -> float | None:
        """The lowest fair tag still queued in `tier` (the tier's virtual time)."""
        entry = self.fair[tier].lowest()
        return entry[0] if entry is not None else None

    # --- candidate gathering --------------------------------------------------------------

    def gather(
        self,
        worker: WorkerView,
        combos: Iterable[str],
        resident_checkpoints: Iterable[str],
        cached_checkpoints: Iterable[str],
        selection: Selection,
        allowed: Callable[[WorkerView, Candidate], bool],
    ) -> list[SimJob]:
        """The union of `selection`'s probes for `worker`, hard limits applied, deduplicated."""
        found: dict[int, SimJob] = {}
        if self.size == 0:
            return []
        for tier in range(len(self.arrivals)):
            if not self.tier_count[tier]:
                continue
            if selection.fair_head_per_tier:
                self._fair_head(tier, selection.fair_head_per_tier, worker, allowed, found)
            if selection.oldest_per_tier:
                self._oldest(tier, selection.oldest_per_tier, worker, allowed, found)
        if self.size <= len(found):
            return list(found.values())
        if selection.per_resident_combo:
            for combo in combos:
                self._probe(
                    self.by_combo.get(combo), selection.per_resident_combo, worker, allowed, found
                )
        if selection.per_resident_checkpoint:
            for sha in islice(resident_checkpoints, selection.resident_checkpoints_probed):
                entries = self.by_checkpoint.get(sha)
                if entries is not None:
                    self._probe(entries, selection.per_resident_checkpoint, worker, allowed, found)
        if selection.per_cached_checkpoint:
            probed = 0
            for sha in cached_checkpoints:
                if probed >= selection.cached_checkpoints_probed:
                    break
                entries = self.by_checkpoint.get(sha)
                if entries is not None:
                    probed += 1
                    self._probe(entries, selection.per_cached_checkpoint, worker, allowed, found)
        return list(found.values())

    def _fair_head(
        self,
        tier: int,
        wanted: int,
        worker: WorkerView,
        allowed: Callable[[WorkerView, Candidate], bool],
        found: dict[int, SimJob],
    ) -> None:
        order = self.fair[tier]
        head = order.head
        rest = order.rest
        limit = wanted + SCAN_SLACK
        kept = live = i = 0
        while kept < wanted and live < limit:
            if i == len(head):
                if not rest:
                    break
                head.append(heapq.heappop(rest))
            job = head[i][2]
            if job.state != QUEUED:
                del head[i]
                continue
            i += 1
            live += 1
            if job.seq in found:
                kept += 1
            elif allowed(worker, job.candidate):
                found[job.seq] = job
                kept += 1
        if len(head) > HEAD_SIZE:
            order.trim()

    def _oldest(
        self,
        tier: int,
        wanted: int,
        worker: WorkerView,
        allowed: Callable[[WorkerView, Candidate], bool],
        found: dict[int, SimJob],
    ) -> None:
        requeued = self.requeued[tier]
        while requeued and requeued[0][2].state != QUEUED:
            heapq.heappop(requeued)
        if requeued:
            # The top is queued (just cleaned); `nsmallest(1)` would scan the whole heap for it.
            oldest = [requeued[0]] if wanted == 1 else heapq.nsmallest(wanted, requeued)
            for _, _, job in oldest:
                if job.state == QUEUED and allowed(worker, job.candidate):
                    found[job.seq] = job
        arrivals = self.arrivals[tier]
        while arrivals and arrivals[0].state != QUEUED:
            arrivals.popleft()
        self._probe(arrivals, wanted, worker, allowed, found)

    @staticmethod
    def _probe(
        entries: deque[SimJob] | None,
        wanted: int,
        worker: WorkerView,
        allowed: Callable[[WorkerView, Candidate], bool],
        found: dict[int, SimJob],
    ) -> None:
        if not entries:
            return
        while entries and entries[0].state != QUEUED:
            entries.popleft()
        kept = 0
        looked = 0
        for job in entries:
            if job.state != QUEUED:
                continue
            looked += 1
            if job.seq in found:
                kept += 1
                if kept >= wanted:
                    return
            elif allowed(worker, job.candidate):
                found[job.seq] = job
                kept += 1
                if kept >= wanted:
                    return
            if looked >= wanted + SCAN_SLACK:
                return
