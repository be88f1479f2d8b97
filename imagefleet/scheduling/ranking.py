"""The model-aware policy: a pure ranking of candidate jobs for the worker asking for work.

Every term is in seconds of waiting, so they add up:

    score = priority * seconds_per_priority      tier head start (paid counts as older),
                                                   for the owner's share of the fleet only
          + waited                                 every second queued counts once
          - (owner's last claim - submit, if later) round robin between owners
          - setup_weight * load seconds            this worker's time to load the models
          - download_weight * download seconds     and to download those not on its disk

- **Aging bound.** From `aging_bound - aging_lead` seconds of waiting on, a job outranks
  everything the worker can run (oldest first among such jobs, a warm one allowed a little
  ahead), whatever its tier, owner or models; the lead leaves time to load its models.
- **Fairness** within a tier: round robin between owners (`scheduling.fairness`). For its
  rank, a job has waited only since the later of its submission and its owner's last claim, so
  a batch's thousand queued jobs take turns with other clients' jobs instead of going first
  because they are older.
- **A tier's head start covers a share.** While an owner has `head_start_jobs` jobs running,
  its other jobs rank without the head start: a paying client's batch goes ahead of free work
  on its share of the GPUs, and the rest of it competes on waiting time like anyone's.
- **Affinity** is priced by `scheduling.costs`: resident combo 0 s, all models resident a combo
  switch, checkpoint resident the adapters' loads, on disk a checkpoint load, else a download by
  size over the worker's measured bandwidth.
- **Bounded wait for a warm worker.** A job this worker would have to set up is left for a busy
  worker that holds its combo (or checkpoint) when that one should start it within
  `max_defer_s` and sooner than this worker could; the job is not offered here (the claim returns
  other work or nothing, and the job goes to the warm worker when it asks next). It never defers
  a job close to the aging bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.costs import Affinity, setup_parts, setup_seconds
from imagefleet.scheduling.decisions import Decision, Selection
from imagefleet.scheduling.inputs import BASE_ROLES, HEAVY_ROLES, Candidate, FleetView, WorkerView
from imagefleet.scheduling.limits import can_run

# Added to the score of a job past `urgent_after_s`: no other term reaches it.
URGENT = 1e12
DEFAULT_CONFIG = PolicyConfig()
# The fair head and the oldest job of each tier, plus the oldest jobs for the combo and the four
# most recent checkpoints on the worker's GPU and the four on its disk.
MODEL_AWARE_SELECTION = Selection(
    fair_head_per_tier=4,
    oldest_per_tier=1,
    per_resident_combo=2,
    per_resident_checkpoint=2,
    resident_checkpoints_probed=4,
    per_cached_checkpoint=1,
    cached_checkpoints_probed=4,
)

# (score, setup seconds, affinity, waited seconds, fair-share delay seconds, urgent,
#  head start withheld: the owner has its share running)
_Evaluation = tuple[float, float, Affinity, float, float, bool, bool]


def rank(
    worker: WorkerView,
    candidates: Sequence[Candidate],
    fleet: FleetView,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> list[Decision]:
    """The candidates `worker` should run now, best first. Jobs it cannot run (hard limits) and
    jobs better left for a busy warm worker are left out."""
    runnable, evaluations = _evaluate_all(worker, candidates, fleet, config)
    order = sorted(
        range(len(runnable)),
        key=lambda i: (-evaluations[i][0], runnable[i].queued_since, runnable[i].job_id),
    )
    return [
        _decision(i, runnable, evaluations, config)
        for i in order
        if not _deferred(runnable[i], evaluations[i], fleet, config)
    ]


def best(
    worker: WorkerView,
    candidates: Sequence[Candidate],
    fleet: FleetView,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Decision | None:
    """`rank(...)[0]` without sorting the others (the simulator's hot path); the deferral
    check, which asks the fleet view, runs only on the leaders."""
    runnable, evaluations = _evaluate_all(worker, candidates, fleet, config)
    scores = [e[0] for e in evaluations]
    remaining = len(scores)
    while remaining:
        top = max(scores)
        index = scores.index(top)
        if scores.count(top) > 1:
            index = min(
                (i for i, score in enumerate(scores) if score == top),
                key=lambda i: (runnable[i].queued_since, runnable[i].job_id),
            )
        if not _deferred(runnable[index], evaluations[index], fleet, config):
            return _decision(index, runnable, evaluations, config)
        scores[index] = -math.inf
        remaining -= 1
    return None


def _decision(
    index: int, runnable: list[Candidate], evaluations: list[_Evaluation], config: PolicyConfig
) -> Decision:
    job, evaluation = runnable[index], evaluations[index]
    why = partial(_reason, job, evaluation, runnable, evaluations, config)
    return Decision(job, evaluation[0], why, evaluation[1])


def choose_waiter(
    job: Candidate,
    waiters: Sequence[WorkerView],
    fleet: FleetView,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> int | None:
    """The parked worker with the least setup for `job` (the first such, so the longest parked
    on a tie), or None when no waiter can run it or it is better left for a busy warm worker.

    Setup, not setup plus generation: a job's wait ends when generation starts, and preferring
    the fastest GPU for every job would load the most expensive GPUs first."""
    chosen: int | None = None
    least = 0.0
    for index, worker in enumerate(waiters):
        if not can_run(worker, job):
            continue
        setup, _ = setup_seconds(worker, job, config)
        if chosen is None or setup < least:
            chosen, least = index, setup
            if setup == 0.0:
                break
    if chosen is None:
        return None
    waited = fleet.now - job.queued_since
    may_defer = least > config.defer_margin_s and waited < config.urgent_after_s and fleet.warm
    if may_defer and _defer(job, least, waited, fleet, config):
        return None
    return chosen


def explain_wait(
    worker: WorkerView, job: Candidate, fleet: FleetView, config: PolicyConfig = DEFAULT_CONFIG
) -> str | None:
    """Why `worker` would not run `job` now, for a queued job's explanation; None if it would."""
    runnable, evaluations = _evaluate_all(worker, [job], fleet, config)
    if not runnable:
        return "this worker cannot run it"
    if _deferred(job, evaluations[0], fleet, config):
        return "waiting for a busy worker that holds its models"
    return None


def _evaluate_all(
    worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView, config: PolicyConfig
) -> tuple[list[Candidate], list[_Evaluation]]:
    """The runnable candidates and their evaluations: the one place the score is computed."""
    runnable: list[Candidate] = []
    evaluations: list[_Evaluation] = []
    now = fleet.now
    served_at = fleet.served_at
    urgent_after = config.urgent_after_s
    urgent_bias = config.aging_lead_s / 2
    setup_weight = config.setup_weight
    download_weight = config.download_weight
    fairness_weight = config.fairness_weight
    per_priority = config.seconds_per_priority
    share = config.head_start_jobs
    running = fleet.running
    resident_combos = worker.resident_combos
    for job in candidates:
        if not can_run(worker, job):
            continue
        if job.combo_key in resident_combos:  # `setup_parts`'s first case, without the call
            download = load = setup = price = 0.0
            affinity = Affinity.combo
        else:
            download, load, affinity = setup_parts(worker, job, config)
            setup = download + load
            price = setup_weight * load + download_weight * download
        if job.prefer_vram_above_mb and worker.vram_mb <= job.prefer_vram_above_mb:
            price += config.small_gpu_s
        since = job.queued_since
        waited = now - since
        runnable.append(job)
        if waited >= urgent_after:
            # Oldest first, but a warm job up to half the lead younger may go ahead of a cold
            # one: when the fleet is overloaded every job is urgent, and pure age order thrashes.
            bias = price if price < urgent_bias else urgent_bias
            evaluations.append((URGENT + waited - bias, setup, affinity, waited, 0.0, True, False))
            continue
        # Round robin between owners: a job waits, for fairness, only since its owner's last
        # job was handed out, so a batch's queued jobs do not outrank other owners' by age.
        served = served_at.get(job.owner)
        behind = 0.0
        if served is not None and served > since:
            behind = fairness_weight * (served - since)
        head = job.priority * per_priority
        withheld = False
        if share and head and running.get(job.owner, 0) >= share:
            head = 0.0
            withheld = True
        score = head + waited - behind - price
        evaluations.append((score, setup, affinity, waited, behind, False, withheld))
    return runnable, evaluations


def _deferred(job: Candidate, e: _Evaluation, fleet: FleetView, config: PolicyConfig) -> bool:
    """Whether this worker should leave `job` for a busy worker holding its models."""
    return (
        not e[5]
        and e[1] > config.defer_margin_s
        and bool(fleet.warm)
        and _defer(job, e[1], e[3], fleet, config)
    )


def _defer(
    job: Candidate, setup: float, waited: float, fleet: FleetView, config: PolicyConfig
) -> bool:
    """True when a busy worker holding the job's combo (or checkpoint) should start it within
    `max_defer_s` and at least `defer_margin_s` sooner than `setup` from now."""
    warm = fleet.warm
    holders = warm.get(job.combo_key)
    there_setup = 0.0
    if holders is None:
        for sha256, _, role in job.models:
            if role in BASE_ROLES:
                holders = warm.get(sha256)
                break
        if holders is None:
            return False
        for _, size, role in job.models:
            if role not in HEAVY_ROLES:
                there_setup += config.adapter_load_s + size / config.disk_to_gpu_bytes_per_s
    if holders.holders <= 0:
        return False
    ahead = max(0, holders.queued - holders.holders) / holders.holders
    there = (
        holders.free_in_seconds
        + ahead * job.cost_units * config.reference_seconds_per_unit
        + there_setup
    )
    return (
        there <= config.max_defer_s
        and there + config.defer_margin_s < setup
        and waited + there < config.urgent_after_s
    )


def _reason(
    job: Candidate,
    e: _Evaluation,
    runnable: list[Candidate],
    evaluations: list[_Evaluation],
    config: PolicyConfig,
) -> str:
    """A few words on why `job` ranks where it does, against the claim's other candidates."""
    _, setup, affinity, waited, lag, urgent, withheld = e
    if urgent:
        return f"waited {waited:.0f} s, near the {config.aging_bound_s:.0f} s bound"
    oldest = True
    lagging = False
    top = bottom = job.priority
    for other, other_e in zip(runnable, evaluations, strict=True):
        if other.priority > top:
            top = other.priority
        elif other.priority < bottom:
            bottom = other.priority
        if other.tier == job.tier:
            if other.queued_since < job.queued_since:
                oldest = False
            if other_e[4] >= 1:
                lagging = True
    if withheld:
        first = f"owner has its share running: no {job.tier} head start"
    elif lag >= 1:
        first = f"owner served {waited - lag:.0f} s ago"
    elif job.priority == top and oldest:
        first = f"oldest {job.tier} job"
    elif lagging:
        first = "fair share: owner under its share"
    elif job.priority > bottom:
        first = f"{job.tier} tier first"
    else:
        first = f"waited {waited:.0f} s"
    if affinity == Affinity.combo:
        return f"{first}; combo resident"
    return f"{first}; {affinity.phrase} ({setup:.1f} s setup)"


@dataclass(frozen=True, slots=True)
class ModelAwarePolicy:
    """`rank`, `best` and `choose_waiter` bound to one config, with the candidate selection the
    policy needs: the fair head and oldest jobs of each tier plus jobs the worker holds models
    for."""

    config: PolicyConfig = DEFAULT_CONFIG
    selection: Selection = MODEL_AWARE_SELECTION
    name: str = "model-aware"

    def rank(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> list[Decision]:
        return rank(worker, candidates, fleet, self.config)

    def best(
        self, worker: WorkerView, candidates: Sequence[Candidate], fleet: FleetView
    ) -> Decision | None:
        return best(worker, candidates, fleet, self.config)

    def choose_waiter(
        self, job: Candidate, waiters: Sequence[WorkerView], fleet: FleetView
    ) -> int | None:
        return choose_waiter(job, waiters, fleet, self.config)
