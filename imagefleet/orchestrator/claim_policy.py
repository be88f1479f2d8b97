"""The scheduling policy in the claim path: turns a claim and the preselected queued jobs into
the pure policy's inputs (`scheduling.inputs`), and keeps the little fleet state a replica needs
for them. The decision itself is the policy's (`IMAGEFLEET_POLICY`, default model-aware); this
module only translates, so the orchestrator and the simulator rank with the same code.

What a replica remembers, each bounded by the number of owners or workers, never by the queue:

- nothing about owners: when each owner last had a job claimed (`FleetView.served_at`, round
  robin between owners) is in the database (`store.owner_service`), read and written in the
  claim transaction, so two replicas take the same turns as one. So is how many jobs each
  candidate's owner has running (`FleetView.running`), read only when `IMAGEFLEET_HEAD_START_JOBS`
  is set and only for owners whose candidates have a head start to lose.
- the busy workers that hold each combo and checkpoint (`FleetView.warm`, for the bounded wait
  for a warm worker), rebuilt from the `worker_state` table and the running jobs at most every
  `WARM_REFRESH_SECONDS`; each is expected free after its job's cost units times the worker's
  measured seconds per unit (its recent attempts, `SPEED_REFRESH_SECONDS`), or the slow
  `SECONDS_PER_UNIT` guess for a worker not measured yet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from imagefleet.config import Settings
from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.decisions import Decision, SchedulingPolicy
from imagefleet.scheduling.inputs import Candidate, FleetView, WarmHolders, WorkerView
from imagefleet.scheduling.policies import make_policy
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store import owner_service as served_sql
from imagefleet.store import worker_state as state_sql
from imagefleet.store.claim_candidates import Probes, QueuedJob
from imagefleet.worker_protocol import ClaimRequest

WARM_REFRESH_SECONDS = 1.0
# Generation seconds per cost unit (megapixel-steps) for a worker with no measured speed: a
# deliberately slow guess, so the policy overestimates how soon a busy warm worker is free and
# waits for one only when that is clearly worth it.
SECONDS_PER_UNIT = 0.5
# A worker's measured speed: its jobs that succeeded in the last SPEED_WINDOW_SECONDS (at most
# SPEED_JOBS of them), read again at most every SPEED_REFRESH_SECONDS.
SPEED_WINDOW_SECONDS = 1800.0
SPEED_JOBS = 5000
SPEED_REFRESH_SECONDS = 30.0
DEFAULT_LEAD_S = PolicyConfig().aging_lead_s


@dataclass(frozen=True)
class _Holder:
    free_at: float
    combos: frozenset[str]
    models: frozenset[str]


def policy_for(settings: Settings) -> SchedulingPolicy:
    """The policy `IMAGEFLEET_POLICY` names, the model-aware one with the configured aging bound
    and share of the head start."""
    bound = settings.aging_bound_seconds
    config = PolicyConfig(
        aging_bound_s=bound,
        aging_lead_s=min(DEFAULT_LEAD_S, bound / 2),
        reference_seconds_per_unit=SECONDS_PER_UNIT,
        head_start_jobs=settings.head_start_jobs,
    )
    return make_policy(settings.policy, config)


class ClaimPolicy:
    """One per replica: the policy and the warm holders (the owners' turns are in the database)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = policy_for(settings)
        # Every priority a job can have: the tiers' and 0 (a tier with no entry).
        self.priorities = sorted({0, *settings.tier_priority.values()}, reverse=True)
        self._lock = threading.Lock()
        self._holders: list[_Holder] = []
        self._holders_at = float("-inf")
        self._owners: list[str] = []
        self._owners_at = float("-inf")
        self._speeds: dict[str, float] = {}
        self._speeds_at = float("-inf")

    def owners(self, conn: Connection, now: float) -> list[str]:
        """Owners with queued jobs for the owner probes, read again at most every
        `WARM_REFRESH_SECONDS` (a new owner waits that long at most to be seen)."""
        with self._lock:
            if now - self._owners_at < WARM_REFRESH_SECONDS:
                return self._owners
        count = 2 * self.policy.selection.fair_head_per_tier
        owners = claim_sql.queued_owners(conn, count) if count else []
        with self._lock:
            self._owners, self._owners_at = owners, now
        return owners

    def probes(self, request: ClaimRequest) -> Probes:
        return Probes(
            resident_combos=request.resident_combos,
            resident_models=request.resident_models,
            cached_models=request.cached_models,
        )

    def worker_view(self, request: ClaimRequest, live_nodes: frozenset[str]) -> WorkerView:
        capabilities = request.capabilities
        return WorkerView(
            worker_id=request.worker_id,
            node_id=request.node_id,
            kinds=frozenset(capabilities.kinds),
            max_pixels=capabilities.max_pixels,
            vram_mb=capabilities.vram_mb,
            gpu_type=capabilities.gpu_name,
            resident_combos=frozenset(request.resident_combos),
            resident_models=frozenset(request.resident_models),
            cached_models=frozenset(request.cached_models),
            bandwidth_bytes_per_s=request.download_bytes_per_s,
            live_nodes=live_nodes,
        )

    def rank(
        self,
        conn: Connection,
        worker: WorkerView,
        queued: Sequence[QueuedJob],
        now: float,
    ) -> list[Decision]:
        """The policy's ranking of the preselected jobs for this worker, best first."""
        candidates = [candidate(job, worker.vram_mb) for job in queued]
        served = {
            job.owner_key_id: job.owner_served_at
            for job in queued
            if job.owner_served_at is not None
        }
        return self.policy.rank(worker, candidates, self._fleet(conn, candidates, served, now))

    def served(
        self,
        conn: Connection,
        owner: str,
        request: ClaimRequest,
        job: QueuedJob,
        now: float,
        recorded: bool = False,
    ) -> None:
        """Records that `owner` just had a job claimed (round robin between owners, in the
        claim's transaction: every replica sees it; `recorded`: the claim's own statement did),
        and that the claiming worker is now busy with it, holding what it reported (until the
        next refresh reads the table again)."""
        if not recorded:
            served_sql.record_served(conn, owner, now)
        speed = self._speeds.get(request.worker_id, SECONDS_PER_UNIT)
        holder = _Holder(
            now + (job.cost_units or 0.0) * speed,
            frozenset(request.resident_combos),
            frozenset(request.resident_models),
        )
        with self._lock:
            self._holders = [*self._holders, holder]

    def _fleet(
        self,
        conn: Connection,
        candidates: Sequence[Candidate],
        served: Mapping[str, float],
        now: float,
    ) -> FleetView:
        """What the policy needs of the fleet; `served`: the candidates' owners' last claims,
        read with the candidates."""
        running: dict[str, int] = {}
        if getattr(self.policy, "config", PolicyConfig()).head_start_jobs:
            ahead = {c.owner for c in candidates if c.priority > 0}
            running = served_sql.running_jobs(conn, ahead)
        warm = _LazyWarm(self, conn, candidates, now)
        return FleetView(now=now, served_at=served, warm=warm, running=running)

    def _warm(
        self, conn: Connection, candidates: Sequence[Candidate], now: float
    ) -> dict[str, WarmHolders]:
        """Busy workers holding each candidate's combo or checkpoint, and how soon the first is
        free. A holder already later than its estimate by more than the policy's longest wait is
        left out: it is slower than thought, or gone."""
        holders = self._refresh(conn, now)
        if not holders:
            return {}
        keys: dict[str, int] = {}
        for job in candidates:
            keys[job.combo_key] = keys.get(job.combo_key, 0) + 1
            for sha256, _, role in job.models:
                if role == "checkpoint":
                    keys[sha256] = keys.get(sha256, 0) + 1
        slack = getattr(self.policy, "config", PolicyConfig()).max_defer_s
        warm: dict[str, WarmHolders] = {}
        for key, queued in keys.items():
            free = [
                h.free_at - now
                for h in holders
                if (key in h.combos or key in h.models) and h.free_at - now > -slack
            ]
            if free:
                warm[key] = WarmHolders(max(0.0, min(free)), len(free), queued)
        return warm

    def _refresh(self, conn: Connection, now: float) -> list[_Holder]:
        with self._lock:
            if now - self._holders_at < WARM_REFRESH_SECONDS:
                return self._holders
        since = now - 3 * self.settings.lease_seconds
        states = {s.worker_id: s for s in state_sql.seen_since(conn, since)}
        speeds = self._measured(conn, now)
        holders = []
        for busy in state_sql.busy_workers(conn):
            state = states.get(busy.worker_id)
            if state is None or not (state.resident_combos or state.resident_models):
                continue
            speed = speeds.get(busy.worker_id, SECONDS_PER_UNIT)
            estimate = (busy.cost_units or 0.0) * speed
            holders.append(
                _Holder(busy.started_at + estimate, state.resident_combos, state.resident_models)
            )
        with self._lock:
            self._holders, self._holders_at = holders, now
        return holders

    def _measured(self, conn: Connection, now: float) -> dict[str, float]:
        """Each worker's measured seconds per cost unit (its recent attempts, claim to end);
        a worker not measured yet is estimated at SECONDS_PER_UNIT."""
        with self._lock:
            if now - self._speeds_at < SPEED_REFRESH_SECONDS:
                return self._speeds
        speeds = state_sql.measured_seconds_per_unit(conn, now - SPEED_WINDOW_SECONDS, SPEED_JOBS)
        with self._lock:
            self._speeds, self._speeds_at = speeds, now
        return speeds


class _LazyWarm(Mapping[str, WarmHolders]):
    """`FleetView.warm`, computed on first use: the policy asks only when a candidate would need
    a setup on the claiming worker, so most claims of a warm fleet never read the holders."""

    def __init__(
        self, owner: ClaimPolicy, conn: Connection, candidates: Sequence[Candidate], now: float
    ) -> None:
        self._args = owner, conn, candidates, now
        self._warm: dict[str, WarmHolders] | None = None

    def _get(self) -> dict[str, WarmHolders]:
        if self._warm is None:
            owner, conn, candidates, now = self._args
            self._warm = owner._warm(conn, candidates, now)
        return self._warm

    def __getitem__(self, key: str) -> WarmHolders:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def candidate(job: QueuedJob, worker_vram_mb: int) -> Candidate:
    """A preselected job as the policy sees it. The VRAM floor is a hard limit only for a worker
    that reports its VRAM (as in the SQL); after an out-of-memory failure the job prefers a GPU
    larger than the one it failed on."""
    return Candidate(
        job_id=job.id,
        owner=job.owner_key_id,
        tier=job.tier,
        priority=job.priority,
        kind=job.kind,
        pixels=job.pixels,
        queued_since=job.created_at,
        combo_key=job.combo_key or "",
        models=job.models,
        cost_units=job.cost_units or 0.0,
        failed_nodes=job.failed_nodes,
        min_vram_mb=(job.required_vram_mb or 0) if worker_vram_mb else 0,
        allow_same_node=job.allow_same_node,
        prefer_vram_above_mb=job.min_vram_mb or 0,
    )
