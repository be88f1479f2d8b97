"""Worker claims: a worker asks for work and gets the best-ranked queued job (or a
micro-batch of compatible ones), each with a new attempt taken by compare-and-set.

The candidate set is gathered by index probes with every hard limit in the SQL (locked with
SKIP LOCKED on PostgreSQL), ranked by the claim policy, and taken with a conditional UPDATE: a
job another claimer took first falls through to the next, so two claimers never get the same
job. The worker's report (capabilities, resident and cached models) is recorded here too.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Connection

from imagefleet.kinds import get_kind, kind_names
from imagefleet.orchestrator import webhooks
from imagefleet.orchestrator.checkpoint_ids import CachedCheckpointIds
from imagefleet.orchestrator.claim_answers import WorkerDraining
from imagefleet.orchestrator.claim_hints import ClaimHints
from imagefleet.orchestrator.claim_policy import ClaimPolicy
from imagefleet.orchestrator.empty_looks import ClaimLook, EmptyLooks, profile_of
from imagefleet.orchestrator.node_health import NodeQuarantined
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.orchestrator.worker_sightings import WorkerSightings, report_of
from imagefleet.scheduling.inputs import Candidate
from imagefleet.store import batch_mates as mate_sql
from imagefleet.store import claim_candidates as claim_sql
from imagefleet.store import claim_probes as probe_sql
from imagefleet.store import folded_claim as folded_sql
from imagefleet.store import inputs as input_sql
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store import nodes as node_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import retry_conflicts
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    InputRef,
)

# While a worker like it just found nothing (or the job that woke it is taken), a worker's
# claims skip even the read-only check for this long after one that found its node neither
# quarantined nor draining: a quarantine or drain reaches a worker within this time.
BLOCKS_FRESH_SECONDS = 5.0


class WorkerClaims(WorkerSightings):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._found_nothing: set[str] = set()  # workers whose last claim here got no job
        self._unblocked_at: dict[str, float] = {}  # worker -> last check: not blocked
        self._claimed = ClaimHints()  # see `claimed_here`
        self.claim_policy = ClaimPolicy(self.settings)
        self._checkpoint_ids = CachedCheckpointIds()  # for the checkpoint probes

    # --- claim ---------------------------------------------------------------------------------

    def claim(self, worker_key: ApiKey, request: ClaimRequest) -> Assignment | None:
        """One job (`claim_batch` with max_jobs 1): the best-ranked, or None."""
        taken = self.claim_batch(worker_key, request.model_copy(update={"max_jobs": 1}))
        return taken[0] if taken else None

    @retry_conflicts
    def claim_batch(
        self,
        worker_key: ApiKey,
        request: ClaimRequest,
        woken: bool = False,
        looks: EmptyLooks | None = None,
        woken_for: str | None = None,
    ) -> list[Assignment]:
        """Hands the best-ranked queued job to this worker, or nothing when nothing fits (or
        what fits is better left for a busy worker that holds its models). A bounded candidate
        set is gathered by index probes with every hard limit in the SQL (locked with SKIP
        LOCKED), ranked by the policy, and the best taken with a conditional update; a job
        another claimer took first falls through to the next, so two claimers never get the
        same job. With `max_jobs` > 1, up to that many in all: the first, then micro-batch
        mates (same batch key, oldest first, taken the same way in the same transaction).
        `woken`: the long poll was woken for new work (the read-only idle check is skipped);
        `woken_for`: the job it was woken for, when the announcement named it.
        `looks`: the replica's record of empty looks and of the jobs claims here took; a claim
        that was not woken, while one of a worker like this one found nothing a moment ago,
        stops before its transaction, and so does one woken for a job a claim here took
        meanwhile (`orchestrator.empty_looks`)."""
        now = self.clock()
        limits = claim_limits(request)
        if not limits.kinds:
            return []
        report = report_of(request)
        look = ClaimLook(profile_of(request), looks, woken)
        idle = request.worker_id in self._found_nothing and not woken
        reports = self._touch_due(request, report, now)  # this claim records the worker
        checked = self._unblocked_at.get(request.worker_id, float("-inf"))
        if not reports and now - checked < BLOCKS_FRESH_SECONDS and look.stale_wake(woken_for):
            return []  # no statement: what woke it is running, or nothing new is queued
        if idle and not reports:
            # A worker whose last claim found nothing, its sighting fresh: one read and no
            # write transaction while the queue stays empty (on SQLite, 100 idle long-pollers'
            # re-checks held the write lock). A busy or woken worker goes straight to the write.
            with self.db.read() as conn:
                blocks = node_sql.claim_blocks(conn, request.node_id)
            if blocks.unblocked:
                self._unblocked_at[request.worker_id] = now
            if blocks.nothing_to_do or (blocks.unblocked and look.skips(blocks)):
                return []
        with self.db.write() as conn:
            taken = self._claim_on(conn, worker_key, request, limits, report, now, look)
        self._claim_committed(request, taken, reports, looks)
        return taken

    def _claim_committed(
        self,
        request: ClaimRequest,
        taken: list[Assignment],
        reports: bool,
        looks: EmptyLooks | None,
    ) -> None:
        """What this replica remembers of a committed claim."""
        if reports:  # recorded and committed: the submits' snapshot of the fleet is out of date
            self.seen_workers.invalidate()
        if len(self._found_nothing) > 10_000:  # workers come and go; forget the old ones
            self._found_nothing.clear()
            self._unblocked_at.clear()
        if taken:
            self._found_nothing.discard(request.worker_id)
            if looks is not None:
                looks.taken(assignment.job_id for assignment in taken)
        else:
            self._found_nothing.add(request.worker_id)

    def _claim_on(
        self,
        conn: Connection,
        worker_key: ApiKey,
        request: ClaimRequest,
        limits: claim_sql.WorkerLimits,
        report: tuple[str, str],
        now: float,
        look: ClaimLook,
    ) -> list[Assignment]:
        """The claim's writes, on the caller's transaction (its own, or a completion's)."""
        planner = self.claim_policy
        self._touch_worker(conn, request, report, now)
        owners = planner.owners(conn, now)

        def probe(past_locked: bool = False) -> probe_sql.Look:
            return probe_sql.look(
                conn,
                limits,
                planner.policy.selection,
                planner.probes(request),
                now,
                planner.priorities,
                owners,
                self._checkpoint_ids,
                past_locked,
            )

        found = probe()
        blocks = found.blocks
        if blocks.quarantined is not None:
            raise NodeQuarantined(blocks.quarantined)
        if blocks.draining is not None:
            raise WorkerDraining(blocks.draining)
        self._unblocked_at[request.worker_id] = now
        if not blocks.anything_queued:
            # Nothing queued at all: an empty look for every worker like this one, the worker's
            # own next claim included (a completion's claim that found nothing is followed at
            # once by its worker's long poll, which then parks without a statement).
            look.found_nothing(blocks)
            return []
        if look.skips(blocks):
            return []
        gathered = claim_sql.lock_candidates(conn, found.ids, found.values, found.vram, now)
        if gathered.matched and not gathered.jobs and found.full and not self.db.is_sqlite:
            # Every job the look matched is held by other claims (each locks the candidates it
            # ranks), and more may be queued: look past them, at the next ones no claim holds
            # (a backlog's claims would otherwise come back empty while jobs wait).
            past = probe(past_locked=True)
            gathered = claim_sql.lock_candidates(conn, past.ids, past.values, past.vram, now)
            gathered = claim_sql.Gathered(gathered.jobs, len(found.ids))
        queued = gathered.jobs
        if not gathered.matched:
            look.found_nothing(blocks)
        if not queued:
            return []
        live: frozenset[str] = frozenset()
        if any(job.allow_same_node and request.node_id in job.failed_nodes for job in queued):
            live = self._live_nodes(conn, now)
        worker = planner.worker_view(request, live)
        by_id = {job.id: job for job in queued}
        for decision in planner.rank(conn, worker, queued, now):
            chosen = by_id[decision.candidate.job_id]
            sha256 = _checkpoint_sha256(decision.candidate)
            first = self._take(
                conn,
                worker_key,
                request,
                chosen.id,
                decision.reason,
                sha256,
                now,
                list(chosen.combo),
                owner_turn=chosen.owner_key_id,
            )
            if first is None:
                continue
            (row, turn_recorded), assignment = first
            planner.served(conn, row.owner_key_id, request, chosen, now, turn_recorded)
            taken = [assignment]
            if request.max_jobs > 1:
                taken += self._take_mates(conn, worker_key, request, limits, row, sha256, now)
            return taken
        return []

    def _take(
        self,
        conn: Connection,
        worker_key: ApiKey,
        request: ClaimRequest,
        job_id: str,
        placement: str | None,
        checkpoint_sha256: str,
        now: float,
        combo: list[job_model_sql.JobModel] | None = None,
        owner_turn: str | None = None,
    ) -> tuple[folded_sql.Taken, Assignment] | None:
        """queued -> running for one job with a new attempt (compare-and-set), or None when
        another claimer took it first. `combo`: the job's models as the candidate search read
        them in this transaction (None: read them; a job's combo never changes once queued).
        `owner_turn`: the owner whose turn the same statement moves (`store.folded.take`)."""
        attempt_id = secrets.token_hex(16)
        expires = now + self.settings.lease_seconds
        attempt = dict(
            attempt_id=attempt_id,
            worker_id=request.worker_id,
            node_id=request.node_id,
            worker_key_id=worker_key.id,
            pool=request.pool,
            gpu=request.capabilities.gpu_name,
            model_cache=_model_cache(checkpoint_sha256, request),
        )
        taken = folded_sql.take(
            conn,
            job_id,
            attempt,
            lease_expires_at=expires,
            placement=placement,
            now=now,
            owner_turn=owner_turn,
        )
        if taken is None:
            return None
        row = taken.row
        webhooks.emit(conn, row, "running", now)
        self._claimed.remember(attempt_id, worker_key.id, row)
        if combo is None:
            combo = job_model_sql.combos(conn, [row.id])[row.id]
        inputs = input_sql.job_input_rows(conn, row.id) if _names_inputs(row) else {}
        assignment = self._assignment(row, attempt_id, expires, combo, inputs)
        assignment.checkpoints = self._resume_points(conn, row, attempt_id)
        return taken, assignment

    def _take_mates(
        self,
        conn: Connection,
        worker_key: ApiKey,
        request: ClaimRequest,
        limits: claim_sql.WorkerLimits,
        first: job_sql.JobRow,
        checkpoint_sha256: str,
        now: float,
    ) -> list[Assignment]:
        """Up to max_jobs - 1 more jobs with the first one's batch key (kinds/batching.py),
        oldest first; each its own attempt. They bypass the ranking: they ride along with a
        job the policy chose, on models that job loads anyway."""
        spec = get_kind(first.kind)
        key = spec.batch_key(spec.parse(first.params))
        if key is None or first.combo_key is None:
            return []
        wanted = request.max_jobs - 1
        mates = mate_sql.queued_mates(
            conn,
            limits,
            kind=first.kind,
            combo_key=first.combo_key,
            exclude=first.id,
            now=now,
            limit=4 * wanted,
        )
        taken: list[Assignment] = []
        placement = f"micro-batch with job {first.id}"
        for mate in mates:
            if len(taken) >= wanted:
                break
            if spec.batch_key(spec.parse(mate.params)) != key:
                continue
            got = self._take(conn, worker_key, request, mate.id, placement, checkpoint_sha256, now)
            if got is not None:
                taken.append(got[1])
        return taken

    def claimed_here(self, worker_key: ApiKey, attempt_id: str) -> job_sql.JobRow | None:
        """The job of an attempt this replica handed out, as it was claimed (what a completion
        needs to name its files: id, kind, params; none of it changes while the job runs),
        once: the entry is forgotten. A hint, never proof of ownership: the completing
        transaction checks that the attempt still holds the job (an entry left by a claim
        whose transaction rolled back names an attempt that never existed, and is refused
        there). None for an attempt claimed on another replica, before a restart, or by
        another key."""
        return self._claimed.take(attempt_id, worker_key.id)

    def _assignment(
        self,
        row: job_sql.JobRow,
        attempt_id: str,
        expires: float,
        combo: list[job_model_sql.JobModel],
        inputs: dict[str, input_sql.InputRow],
    ) -> Assignment:
        """What the worker needs: params, the resolved combo, where to fetch inputs and (with
        an S3-compatible store) where to put each output."""
        store = self._file_store()
        targets = self._upload_targets(row, attempt_id)
        return Assignment(
            job_id=row.id,
            attempt_id=attempt_id,
            fencing_token=row.attempts,
            lease_seconds=self.settings.lease_seconds,
            lease_expires_at=to_datetime(expires),
            kind=row.kind,
            params=row.params,
            models=[item.model.ref(item.role, item.weight) for item in combo],
            combo_key=row.combo_key,
            inputs=[
                InputRef(
                    name=name,
                    input_id=item.id,
                    url=store.presigned_get(item.key)
                    or f"/v1/worker/attempts/{attempt_id}/inputs/{name}",
                    sha256=item.sha256,
                    content_type=item.content_type,
                    width=item.width,
                    height=item.height,
                )
                for name, item in sorted(inputs.items())
            ],
            uploads=targets,
            placement=row.placement,
        )

    def _live_nodes(self, conn: Connection, now: float) -> frozenset[str]:
        """Nodes with a worker seen within the last three leases: whether a job that failed
        on this node has anywhere else to go."""
        return worker_sql.live_nodes(conn, now - 3 * self.settings.lease_seconds)


def claim_limits(request: ClaimRequest) -> claim_sql.WorkerLimits:
    """The claim's hard limits, with the kinds this orchestrator does not know left out."""
    capabilities = request.capabilities
    known_kinds = set(kind_names())
    return claim_sql.WorkerLimits(
        request.node_id,
        [kind for kind in capabilities.kinds if kind in known_kinds],
        capabilities.max_pixels,
        capabilities.vram_mb,
    )


def _names_inputs(row: job_sql.JobRow) -> bool:
    """Whether the job's params name uploaded inputs (as its kind's requirements list them, the
    same that linked them at submit): a txt2img claim then skips the inputs read."""
    spec = get_kind(row.kind)
    return bool(spec.requirements(spec.parse(row.params)).inputs)


def _checkpoint_sha256(job: Candidate) -> str:
    return next((sha256 for sha256, _, role in job.models if role == "checkpoint"), "")


def _model_cache(sha256: str, request: ClaimRequest) -> str | None:
    """Where the job's checkpoint was on the claiming worker (model usage in /metrics)."""
    if not sha256:
        return None
    if sha256 in request.resident_models:
        return "gpu"
    return "disk" if sha256 in request.cached_models else "miss"
