"""The simulator's speed-ups against the plain structures they replace: a tier's `TagOrder` meets
entries in exactly a heap's order, and a node's setup memo never answers for models that have
moved (the golden run checks the whole report; these check the parts on their own)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.costs import setup_parts
from imagefleet.scheduling.inputs import Candidate, ModelNeed, SetupPrice, WorkerView
from imagefleet.scheduling.simulator.config import FleetConfig, GpuType
from imagefleet.scheduling.simulator.nodes import SimWorker
from imagefleet.scheduling.simulator.queue import (
    HEAD_SIZE,
    QUEUED,
    RUNNING,
    SCAN_SLACK,
    FairEntry,
    SimJob,
    SimQueue,
)


def _job(index: int, tag: float) -> SimJob:
    models: tuple[ModelNeed, ...] = (("ckpt", 1, "checkpoint"),)
    candidate = Candidate(f"j{index}", "o", "free", 0, "txt2img", 1, 0.0, "ckpt+", models, 1.0)
    return SimJob(index, candidate, "ckpt", 0, tag)


def _heap_fair_head(heap: list[FairEntry], wanted: int, found: dict[int, SimJob]) -> None:
    """The fair head as it was read before `TagOrder`: pop the heap, push the live ones back."""
    popped: list[FairEntry] = []
    kept = 0
    while heap and kept < wanted and len(popped) < wanted + SCAN_SLACK:
        entry = heapq.heappop(heap)
        job = entry[2]
        if job.state != QUEUED:
            continue
        popped.append(entry)
        if job.seq not in found:
            found[job.seq] = job
        kept += 1
    for entry in popped:
        heapq.heappush(heap, entry)


def test_the_fair_head_is_read_exactly_as_from_a_plain_heap() -> None:
    rng = random.Random(7)
    queue = SimQueue(1, fair_index=True)
    heap: list[FairEntry] = []
    jobs: list[SimJob] = []
    allowed: Callable[[WorkerView, Candidate], bool] = lambda worker, job: True  # noqa: E731
    worker = cast(WorkerView, None)
    for step in range(4000):
        roll = rng.random()
        if roll < 0.45 or not jobs:
            job = _job(len(jobs), float(rng.randrange(300)))  # many equal tags
            jobs.append(job)
            queue.add(job)
            heapq.heappush(heap, (job.tag, job.seq, job))
        elif roll < 0.8:
            victim = rng.choice(jobs)
            if victim.state == QUEUED:
                queue.take(victim)  # claimed: its entries stay until met (lazy deletion)
            elif victim.state == RUNNING:
                queue.requeue(victim)  # a second entry for the same job, as in the engine
                heapq.heappush(heap, (victim.tag, victim.seq, victim))
        else:
            wanted = rng.choice((1, 4, 8))
            ours: dict[int, SimJob] = {}
            theirs: dict[int, SimJob] = {}
            queue._fair_head(0, wanted, worker, allowed, ours)
            _heap_fair_head(heap, wanted, theirs)
            assert list(ours) == list(theirs), step
            while heap and heap[0][2].state != QUEUED:
                heapq.heappop(heap)
            assert queue.lowest_tag(0) == (heap[0][0] if heap else None), step
            assert len(queue.fair[0].head) <= HEAD_SIZE


def test_a_node_forgets_its_setup_prices_when_a_model_arrives_or_leaves() -> None:
    gpu = GpuType(
        name="RTX 4090",
        count=1,
        seconds_per_unit=5.0,
        hourly_usd=0.35,
        vram_gb=24,
        disk_gb=60,
        bandwidth_mb_s=125,
        interruptions_per_hour=0.0,
    )
    fleet = FleetConfig(gpus=[gpu])
    worker = SimWorker(0, gpu, 0, fleet, 0.0)
    config = PolicyConfig()
    big = 7 * 10**9
    a: tuple[ModelNeed, ...] = (("a", big, "checkpoint"),)
    b: tuple[ModelNeed, ...] = (("b", big, "checkpoint"),)
    c: tuple[ModelNeed, ...] = (("c", big, "checkpoint"),)

    def candidate(models: tuple[ModelNeed, ...]) -> Candidate:
        combo = models[0][0] + "+"
        return Candidate("j", "o", "free", 0, "txt2img", 1, 0.0, combo, models, 1.0)

    def fresh_price(models: tuple[ModelNeed, ...]) -> SetupPrice:
        # The same view without the memo: what the policy would compute from scratch.
        return setup_parts(replace(worker.view(), setup_memo=None), candidate(models), config)

    for _ in range(2):  # the second round answers from the memo
        for models in (a, b, c):
            assert setup_parts(worker.view(), candidate(models), config) == fresh_price(models)
    assert worker.setup_memo
    worker.setup("a+", a, fleet)  # a downloaded and loaded: every price may have moved
    assert not worker.setup_memo
    for models in (a, b, c):
        assert setup_parts(worker.view(), candidate(models), config) == fresh_price(models)
    worker.setup("a+", a, fleet)  # nothing moved: the memo survives
    assert worker.setup_memo
