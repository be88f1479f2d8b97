"""A training job's view, computed purely from its rows: the loss curve, steps done and ETA,
the checkpoints kept, each attempt's start and reach, the interruptions it survived and the
steps they cost, and its bill (scaling/pricing.py: lease seconds x the GPU's hourly price).

An attempt's lease time runs from its claim to its end; for one whose lease expired, to the
lease's end after its last heartbeat (the reaper may take the job later than that, and the
worker was gone by then). How far an attempt got is what its heartbeats reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imagefleet.api_views import ModelView
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.protocol import AttemptOutcome
from imagefleet.scaling.pricing import AttemptRecord, PriceTable, job_cost
from imagefleet.store.attempts import AttemptRow
from imagefleet.store.checkpoints import CheckpointRow, PointRow, ResumeRow
from imagefleet.store.jobs import JobRow
from imagefleet.training_protocol import (
    LossPoint,
    TrainingAttemptView,
    TrainingCheckpointView,
    TrainingView,
)

INTERRUPTED = (AttemptOutcome.lease_expired, AttemptOutcome.handed_back, AttemptOutcome.failed)


@dataclass(frozen=True)
class TrainingFacts:
    """Everything the view is computed from, as read in one transaction."""

    job: JobRow
    total_steps: int
    attempts: Sequence[AttemptRow]
    points: Sequence[PointRow]
    resumes: Mapping[str, ResumeRow]
    checkpoints: Sequence[CheckpointRow]  # still recorded, corrupt ones included
    gpu_by_worker: Mapping[str, str]
    lease_seconds: float
    model: ModelView | None = None


def lease_end(attempt: AttemptRow, last_beat: float | None, lease_seconds: float) -> float | None:
    """When the attempt stopped holding its lease (None: it still holds it)."""
    if attempt.ended_at is None:
        return None
    if attempt.outcome is AttemptOutcome.lease_expired and last_beat is not None:
        return min(attempt.ended_at, last_beat + lease_seconds)
    return attempt.ended_at


def steps_lost(reached: Sequence[int], resumed: Sequence[int | None]) -> list[int]:
    """For each attempt but the last: the steps the next one trained again (it resumed below
    where this one got). `resumed[i]` is None until attempt i reported its start."""
    lost = []
    for index in range(len(reached) - 1):
        start = resumed[index + 1]
        lost.append(0 if start is None else max(0, reached[index] - start))
    return lost


def eta_seconds(points: Sequence[PointRow], total_steps: int) -> float | None:
    """The remaining steps at the pace of the current attempt's reported points."""
    if len(points) < 2:
        return None
    first, last = points[0], points[-1]
    if last.at <= first.at or last.step <= first.step:
        return None
    pace = (last.step - first.step) / (last.at - first.at)
    return max(0.0, (total_steps - last.step) / pace)


def training_view(facts: TrainingFacts, prices: PriceTable, now: float) -> TrainingView:
    job = facts.job
    seq_of = {a.id: a.seq for a in facts.attempts}
    by_attempt: dict[str, list[PointRow]] = {}
    for point in facts.points:
        by_attempt.setdefault(point.attempt_id, []).append(point)
    records, views, reached, resumed = [], [], [], []
    for attempt in facts.attempts:
        points = by_attempt.get(attempt.id, [])
        resume = facts.resumes.get(attempt.id)
        start = resume.resumed_from_step if resume else None
        reported = [c.step for c in facts.checkpoints if c.attempt_id == attempt.id]
        got = max([p.step for p in points] + reported + [start or 0])
        end = lease_end(attempt, points[-1].at if points else None, facts.lease_seconds)
        record = AttemptRecord(
            job_id=job.id,
            attempt_id=attempt.id,
            worker_id=attempt.worker_id,
            pool=None,
            gpu=facts.gpu_by_worker.get(attempt.worker_id),
            claimed_at=attempt.started_at,
            ended_at=end,
            outcome=attempt.outcome.value,
            training_steps=max(0, got - (start or 0)),
        )
        records.append(record)
        reached.append(got)
        resumed.append(start)
        billed = job_cost(job.id, [record], prices, now).billable_seconds
        views.append(
            TrainingAttemptView(
                number=attempt.seq,
                outcome=attempt.outcome,
                resumed_from_step=start,
                reached_step=got,
                billable_seconds=billed,
                notes=list(resume.notes) if resume else [],
            )
        )
    bill = job_cost(job.id, records, prices, now)
    interrupted = [i for i, a in enumerate(facts.attempts[:-1]) if a.outcome in INTERRUPTED]
    lost = steps_lost(reached, resumed)
    current = by_attempt.get(job.current_attempt_id or "", [])
    newest = facts.points[-1] if facts.points else None
    hourly = {prices.hourly(None, r.gpu) for r in records} - {None}
    priced = bill.cost if bill.billable_seconds > bill.unpriced_seconds else None
    steps_done = job.progress_step if job.progress_total else max(reached, default=0)
    return TrainingView(
        job_id=job.id,
        status=job.status,
        steps_done=facts.total_steps if job.status.value == "succeeded" else steps_done,
        total_steps=facts.total_steps,
        loss=newest.loss if newest else None,
        learning_rate=newest.learning_rate if newest else None,
        eta_seconds=eta_seconds(current, facts.total_steps) if job.current_attempt_id else None,
        loss_curve=[
            LossPoint(
                step=p.step,
                loss=p.loss,
                learning_rate=p.learning_rate,
                attempt=seq_of.get(p.attempt_id, 0),
            )
            for p in facts.points
        ],
        checkpoints=[
            TrainingCheckpointView(
                step=c.step,
                attempt=seq_of.get(c.attempt_id, 0),
                size_bytes=c.size_bytes,
                created_at=to_datetime(c.created_at),
            )
            for c in facts.checkpoints
            if c.corrupt_reason is None
        ],
        attempts=views,
        interruptions_survived=len(interrupted),
        steps_lost=sum(lost[i] for i in interrupted),
        billable_seconds=bill.billable_seconds,
        hourly_price=hourly.pop() if len(hourly) == 1 else None,
        cost=priced,
        cost_per_step=(priced / facts.total_steps)
        if priced is not None and facts.total_steps
        else None,
        model=facts.model,
    )
