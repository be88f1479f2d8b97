"""The discrete-event fleet simulation: one policy, one workload, one fleet.

Events are arrivals (read in order from the workload, not queued in the heap), attempt
completions, node interruptions and replacements, and re-polls of workers whose claim came back
empty. A worker with nothing to do parks, as a long-polling claim does; a new job wakes the
parked worker the policy's `choose_waiter` picks (one suitable waiter, not all of them).

Each claim is what the orchestrator's claim will be: build the worker's view, gather a bounded
candidate set through the queue's indexes (`Selection`), call the policy. The policy functions
are the real ones; nothing here knows which policy runs.
"""

from __future__ import annotations

import gc
import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from imagefleet.scheduling.costs import generation_seconds
from imagefleet.scheduling.decisions import SchedulingPolicy
from imagefleet.scheduling.fairness import advance, fair_tag
from imagefleet.scheduling.inputs import (
    Candidate,
    FleetView,
    ModelNeed,
    WorkerView,
)
from imagefleet.scheduling.limits import can_run
from imagefleet.scheduling.simulator.catalog import warm_models
from imagefleet.scheduling.simulator.config import FleetConfig, PolicyConfig, SimConfig
from imagefleet.scheduling.simulator.fleetstate import ParkedWorkers, WarmIndex
from imagefleet.scheduling.simulator.metrics import RunResult, collect
from imagefleet.scheduling.simulator.nodes import SimWorker
from imagefleet.scheduling.simulator.queue import QUEUED, SimJob, SimQueue
from imagefleet.scheduling.simulator.workload import Workload

FINISH, INTERRUPT, REPLACE, REPOLL, RECHECK = range(5)
CHUNK = 65536
Progress = Callable[[int, int], None]


class Simulation:
    def __init__(
        self,
        config: SimConfig,
        workload: Workload,
        policy: SchedulingPolicy,
        fleet: FleetConfig | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet or config.fleet
        self.workload = workload
        self.policy = policy
        self.policy_config: PolicyConfig = config.policy_config()
        self.selection = policy.selection
        self.progress = progress
        self.rng = random.Random(config.seed * 7919 + 17)
        tiers = len(workload.tier_names)
        self.queue = SimQueue(tiers, fair_index=self.selection.fair_head_per_tier > 0)
        self.warm = WarmIndex(self.queue)
        self.virtual = [0.0] * tiers
        self.served_at: dict[str, float] = {}
        self.running: dict[str, int] = {}  # jobs claimed and not finished, per owner
        self.owner_finish: dict[int, float] = {}
        self.fleet_view = FleetView(math.nan, self.served_at, self.warm, self.running)
        self.events: list[tuple[float, int, int, object, int]] = []
        self.seq = 0
        self.now = 0.0
        self.waiters = ParkedWorkers()
        self.attempts = 0
        self.workers: list[SimWorker] = []
        for gpu in self.fleet.gpus:
            for slot in range(gpu.count):
                self.workers.append(SimWorker(len(self.workers), gpu, slot, self.fleet, 0.0))
        n = workload.jobs
        self.wait = [math.nan] * n
        self.queue_wait = [math.nan] * n
        self.finished = 0
        self.completions = [0] * n
        self.images: list[int] = workload.images.tolist()
        self.images_done = 0
        self.lost_attempts = 0
        self.deferrals = 0
        self.last_finish = 0.0
        self._prepare_models()

    def _prepare_models(self) -> None:
        catalog = self.workload.catalog
        self.checkpoint_needs: list[ModelNeed] = [
            (name, int(size), "checkpoint")
            for name, size in zip(
                catalog.checkpoint_names, catalog.checkpoint_sizes.tolist(), strict=True
            )
        ]
        self.lora_needs: list[ModelNeed] = [
            (name, int(size), "lora")
            for name, size in zip(catalog.lora_names, catalog.lora_sizes.tolist(), strict=True)
        ]

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> RunResult:
        if self.fleet.warm_start:
            self._warm_start()
        for worker in self.workers:
            self._schedule_interruption(worker)
            self._park(worker)
        # The cyclic garbage collector is paused while events run: the loop makes no reference
        # cycles, and with a million jobs' objects alive each full collection scans them all
        # (about 6% of a day-long run's CPU time, more as the run grows).
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._loop()
        finally:
            if collecting:
                gc.enable()
        end = max(self.workload.horizon_s, self.last_finish)
        for worker in self.workers:
            if worker.alive:
                worker.stop(end)
        return collect(self, end)

    def _loop(self) -> None:
        total = self.workload.jobs
        arrivals = self._arrivals()
        next_job = next(arrivals, None)
        # The next arrival's time as a Python float (a numpy scalar compares far slower).
        arrival_t = next_job.candidate.queued_since if next_job is not None else math.inf
        events = self.events
        report_every = max(1, total // 200)
        while True:
            if events and events[0][0] <= arrival_t:
                when, _, kind, subject, token = heapq.heappop(events)
                self.now = self.warm.now = when
                self._handle(kind, subject, token)
            elif next_job is not None:
                self.now = self.warm.now = arrival_t
                self._arrive(next_job)
                next_job = next(arrivals, None)
                arrival_t = next_job.candidate.queued_since if next_job is not None else math.inf
            else:
                break
            if self.finished == total and next_job is None:
                break
            if self.progress is not None and self.finished % report_every == 0:
                self.progress(self.finished, total)
        if self.progress is not None:
            self.progress(self.finished, total)

    def _warm_start(self) -> None:
        catalog = self.workload.catalog
        for worker in self.workers:
            rng = np.random.default_rng([self.config.seed, 5, worker.index])
            checkpoints, loras = warm_models(self.config, catalog, rng, worker.disk_budget)
            worker.prefill(
                [self.checkpoint_needs[i] for i in checkpoints],
                [self.lora_needs[i] for i in loras],
            )

    def _handle(self, kind: int, subject: object, token: int) -> None:
        if kind == FINISH:
            assert isinstance(subject, SimWorker)
            if subject.alive and subject.incarnation == token:
                self._finish(subject)
        elif kind == INTERRUPT:
            assert isinstance(subject, SimWorker)
            if subject.alive and subject.incarnation == token:
                self._interrupt(subject)
        elif kind == REPLACE:
            assert isinstance(subject, SimWorker)
            subject.start(self.now)
            self._schedule_interruption(subject)
            self._claim(subject)
        elif kind == REPOLL:
            assert isinstance(subject, SimWorker)
            if subject.alive and subject in self.waiters and subject.park_token == token:
                self.waiters.remove(subject)
                self._claim(subject)
        elif kind == RECHECK:
            assert isinstance(subject, SimJob)
            if subject.state == QUEUED:
                self._wake_for(subject)

    def _push(self, when: float, kind: int, subject: object, token: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, subject, token))

    # --- arrivals ------------------------------------------------------------------------------

    def _arrivals(self) -> Iterator[SimJob]:
        """Jobs in arrival order, built a chunk at a time (a million candidates need not all
        exist at once)."""
        w = self.workload
        names = w.owner_names
        tiers = w.tier_names
        priorities = w.tier_priority
        checkpoint_needs = self.checkpoint_needs
        lora_needs = self.lora_needs
        virtual = self.virtual
        owner_finish = self.owner_finish
        # (checkpoint, *loras) row -> (models, combo key): half the requests repeat their
        # owner's last combo and batches share one, so most rows are built once.
        combos: dict[tuple[int, ...], tuple[tuple[ModelNeed, ...], str]] = {}
        for start in range(0, w.jobs, CHUNK):
            stop = min(w.jobs, start + CHUNK)
            if len(combos) > 4 * CHUNK:
                combos.clear()
            rows = zip(
                w.times[start:stop].tolist(),
                w.owner[start:stop].tolist(),
                w.tier[start:stop].tolist(),
                w.checkpoint[start:stop].tolist(),
                w.loras[start:stop].tolist(),
                w.cost[start:stop].tolist(),
                w.pixels[start:stop].tolist(),
                w.min_vram_mb[start:stop].tolist(),
                strict=True,
            )
            index = start - 1
            for t, owner, tier, ckpt, loras, cost, pixels, vram in rows:
                index += 1
                key = (ckpt, *loras)
                known = combos.get(key)
                if known is None:
                    checkpoint = checkpoint_needs[ckpt]
                    adapters = sorted({lora_needs[lora] for lora in loras if lora >= 0})
                    models = (checkpoint, *adapters)
                    known = combos[key] = (models, "+".join(need[0] for need in models) + "+")
                models, combo = known
                tag, finish = fair_tag(virtual[tier], owner_finish.get(owner), cost)
                owner_finish[owner] = finish
                candidate = Candidate(
                    f"j{index}",
                    names[owner],
                    tiers[tier],
                    priorities[tier],
                    "txt2img",
                    pixels,
                    t,
                    combo,
                    models,
                    cost,
                    min_vram_mb=vram,
                )
                yield SimJob(index, candidate, models[0][0], tier, tag)

    def _arrive(self, job: SimJob) -> None:
        self.queue.add(job)
        self._wake_for(job)

    def _wake_for(self, job: SimJob) -> None:
        """Wakes the parked worker the policy picks for `job`; if it picks none while workers
        are parked, looks again after the policy's defer bound."""
        if not self.waiters:
            return
        parked = self.waiters.offer(job)
        views = [worker.view_cache or worker.view() for worker in parked]
        chosen = self.policy.choose_waiter(job.candidate, views, self._fleet_view())
        if chosen is None:
            if any(can_run(view, job.candidate) for view in views):
                self.deferrals += 1
                self._push(self.now + self.policy_config.max_defer_s, RECHECK, job, 0)
            return
        worker = parked[chosen]
        self.waiters.remove(worker)
        self._claim(worker)

    # --- claims and attempts -----------------------------------------------------------------

    def _fleet_view(self) -> FleetView:
        """The fleet as the policy sees it now; its maps are live, so one view serves every
        claim and wake-up at the same instant (an arrival's wake-up and the claim it causes)."""
        view = self.fleet_view
        if view.now != self.now:
            view = self.fleet_view = FleetView(self.now, self.served_at, self.warm, self.running)
        return view

    def _park(self, worker: SimWorker) -> None:
        worker.park_token += 1
        self.waiters.add(worker)

    def _claim(self, worker: SimWorker) -> None:
        view = worker.view()
        found = self.queue.gather(
            view,
            worker.combo,
            reversed(worker.checkpoints),
            reversed(worker.disk_checkpoints),
            self.selection,
            can_run,
        )
        if not found:
            self._park(worker)
            return
        decision = self.policy.best(view, [job.candidate for job in found], self._fleet_view())
        if decision is None:
            self._park(worker)
            self._push(self.now + self.config.repoll_s, REPOLL, worker, worker.park_token)
            return
        chosen = decision.candidate
        for job in found:
            if job.candidate is chosen:
                self._start(worker, view, job, decision.setup_seconds)
                return
        raise RuntimeError(f"the policy chose {chosen.job_id}, not one of the candidates")

    def _start(
        self, worker: SimWorker, view: WorkerView, job: SimJob, setup_estimate: float
    ) -> None:
        queue = self.queue
        queue.take(job)
        tier = job.tier
        if queue.fair_index:
            self.virtual[tier] = advance(self.virtual[tier], queue.lowest_tag(tier))
        if job.first_claim < 0:
            job.first_claim = self.now
        job.attempts += 1
        candidate = job.candidate
        estimate = setup_estimate + generation_seconds(view, candidate, self.policy_config)
        download, load = worker.setup(job.combo, candidate.models, self.fleet)
        generate = candidate.cost_units * worker.gpu.seconds_per_unit
        worker.job = job
        worker.attempt_started = self.now
        worker.phases = (download, load, generate)
        worker.expected_free = self.now + estimate
        self.attempts += 1
        worker.attempt_token = self.attempts
        self.served_at[candidate.owner] = self.now
        self.running[candidate.owner] = self.running.get(candidate.owner, 0) + 1
        self.warm.add(worker, (job.combo, *worker.checkpoints))
        self._push(self.now + download + load + generate, FINISH, worker, worker.incarnation)

    def _finish(self, worker: SimWorker) -> None:
        job = worker.job
        assert isinstance(job, SimJob)
        download, load, generate = worker.phases
        worker.downloading_s += download
        worker.loading_s += load
        worker.generating_s += generate
        worker.mark_measured()
        worker.job = None
        self.warm.remove(worker)
        self.running[job.candidate.owner] -= 1
        index = job.index
        started = worker.attempt_started + download + load
        self.wait[index] = started - job.candidate.queued_since
        self.queue_wait[index] = job.first_claim - job.candidate.queued_since
        self.completions[index] += 1
        job.state = 2
        self.finished += 1
        self.images_done += self.images[index]
        self.last_finish = self.now
        self._claim(worker)

    def _schedule_interruption(self, worker: SimWorker) -> None:
        rate = worker.gpu.interruptions_per_hour
        if rate > 0:
            delay = self.rng.expovariate(rate / 3600.0)
            self._push(self.now + delay, INTERRUPT, worker, worker.incarnation)

    def _interrupt(self, worker: SimWorker) -> None:
        """The node vanishes: its attempt's work is lost and the job is queued again, never to
        return to this node; a replacement with empty caches arrives later."""
        self.waiters.remove(worker)
        job = worker.job
        if isinstance(job, SimJob):
            worker.lost_s += self.now - worker.attempt_started
            self.lost_attempts += 1
            self.warm.remove(worker)
            self.running[job.candidate.owner] -= 1
            failed = job.candidate.failed_nodes | {worker.node_id}
            job.candidate = replace(job.candidate, failed_nodes=failed)
            worker.job = None
            self.queue.requeue(job)
        worker.stop(self.now)
        self._push(self.now + self.fleet.replacement_delay_s, REPLACE, worker, 0)
        if isinstance(job, SimJob):
            self._wake_for(job)


def simulate(
    config: SimConfig,
    workload: Workload,
    policy: SchedulingPolicy,
    fleet: FleetConfig | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Runs `policy` on `workload` over `fleet` (by default the config's) and measures it."""
    return Simulation(config, workload, policy, fleet, progress).run()
