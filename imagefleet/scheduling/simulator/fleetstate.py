"""What the simulated orchestrator knows about workers other than the one claiming: busy workers
that hold a combo or checkpoint (`FleetView.warm`), and the parked workers a new job may wake.

Both are indexes kept up to date as workers start and finish, so that a claim or an arrival
costs the same with 40 or 400 GPUs."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping

from imagefleet.scheduling.inputs import WarmHolders
from imagefleet.scheduling.simulator.nodes import SimWorker
from imagefleet.scheduling.simulator.queue import SimJob, SimQueue


class WarmIndex(Mapping[str, WarmHolders]):
    """`FleetView.warm`: busy workers by the combo and checkpoints they hold, with the soonest
    expected free time per key from a heap (entries of finished attempts are dropped lazily)."""

    def __init__(self, queue: SimQueue) -> None:
        self.holders: dict[str, list[tuple[float, int, SimWorker]]] = {}
        self.counts: dict[str, int] = {}
        self.queue = queue
        self.now = 0.0

    def add(self, worker: SimWorker, keys: tuple[str, ...]) -> None:
        worker.warm_keys = keys
        entry = (worker.expected_free, worker.attempt_token, worker)
        for key in keys:
            heap = self.holders.get(key)
            if heap is None:
                self.holders[key] = [entry]
                self.counts[key] = 1
            else:
                heapq.heappush(heap, entry)
                self.counts[key] += 1

    def remove(self, worker: SimWorker) -> None:
        for key in worker.warm_keys:
            left = self.counts[key] - 1
            if left:
                self.counts[key] = left
            else:
                del self.counts[key]
                del self.holders[key]
        worker.warm_keys = ()
        worker.attempt_token = -1

    def get(self, key: str, default: WarmHolders | None = None) -> WarmHolders | None:  # type: ignore[override]
        heap = self.holders.get(key)
        if heap is None:
            return default
        while heap[0][2].attempt_token != heap[0][1]:
            heapq.heappop(heap)
        free = heap[0][0] - self.now
        queued = self.queue.combo_count.get(key) or self.queue.checkpoint_count.get(key, 0)
        return WarmHolders(free if free > 0 else 0.0, self.counts[key], queued)

    def __getitem__(self, key: str) -> WarmHolders:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.holders)

    def __len__(self) -> int:
        return len(self.holders)


class ParkedWorkers:
    """Workers waiting in a long poll, longest parked first, indexed by their active combo and
    GPU checkpoints: a new job is offered to the parked workers that hold its combo, else its
    checkpoint, else all of them (as the orchestrator's per-replica waiter queue would)."""

    def __init__(self) -> None:
        self.all: dict[int, SimWorker] = {}
        self.by_key: dict[str, dict[int, SimWorker]] = {}

    def __len__(self) -> int:
        return len(self.all)

    def __contains__(self, worker: SimWorker) -> bool:
        return worker.index in self.all

    def add(self, worker: SimWorker) -> None:
        self.all[worker.index] = worker
        keys = (*worker.combo, *worker.checkpoints)
        worker.parked_keys = keys
        for key in keys:
            group = self.by_key.get(key)
            if group is None:
                self.by_key[key] = {worker.index: worker}
            else:
                group[worker.index] = worker

    def remove(self, worker: SimWorker) -> None:
        if self.all.pop(worker.index, None) is None:
            return
        for key in worker.parked_keys:
            group = self.by_key[key]
            del group[worker.index]
            if not group:
                del self.by_key[key]
        worker.parked_keys = ()

    def offer(self, job: SimJob) -> list[SimWorker]:
        """The parked workers to offer `job` to."""
        group = self.by_key.get(job.combo) or self.by_key.get(job.checkpoint)
        return list((group or self.all).values())
