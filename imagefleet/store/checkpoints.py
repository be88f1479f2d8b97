"""Training SQL: checkpoints, loss-curve points and where each attempt resumed from.

Written only by transitions that hold the job's row lock (or SQLite's write lock): the
checkpoint and resume transitions, the heartbeat (points, after its conditional renewal) and
completion (which deletes what is left). Reads are plain."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from imagefleet.store.tables import jobs
from imagefleet.store.tables_training import (
    training_attempts,
    training_checkpoints,
    training_points,
)


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    job_id: str
    attempt_id: str
    step: int
    key: str
    size_bytes: int
    sha256: str
    created_at: float
    corrupt_reason: str | None


@dataclass(frozen=True)
class PointRow:
    attempt_id: str
    step: int
    loss: float
    learning_rate: float
    at: float


@dataclass(frozen=True)
class ResumeRow:
    attempt_id: str
    resumed_from_step: int
    notes: list[str]
    at: float


def insert_checkpoint(
    conn: Connection,
    *,
    job_id: str,
    attempt_id: str,
    step: int,
    key: str,
    size_bytes: int,
    sha256: str,
    now: float,
) -> int:
    result = conn.execute(
        insert(training_checkpoints).values(
            job_id=job_id,
            attempt_id=attempt_id,
            step=step,
            key=key,
            size_bytes=size_bytes,
            sha256=sha256,
            created_at=now,
        )
    )
    primary = result.inserted_primary_key
    assert primary is not None
    return int(primary[0])


def job_checkpoints(conn: Connection, job_id: str, *, usable_only: bool) -> list[CheckpointRow]:
    """The job's checkpoints, newest first (by step, then by when they were reported)."""
    query = select(training_checkpoints).where(training_checkpoints.c.job_id == job_id)
    if usable_only:
        query = query.where(training_checkpoints.c.corrupt_reason.is_(None))
    rows = conn.execute(
        query.order_by(training_checkpoints.c.step.desc(), training_checkpoints.c.id.desc())
    ).mappings()
    return [CheckpointRow(**row) for row in rows]


def get_checkpoint(conn: Connection, checkpoint_id: int) -> CheckpointRow | None:
    row = (
        conn.execute(select(training_checkpoints).where(training_checkpoints.c.id == checkpoint_id))
        .mappings()
        .first()
    )
    return CheckpointRow(**row) if row else None


def delete_checkpoints(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(delete(training_checkpoints).where(training_checkpoints.c.id.in_(ids)))


def mark_corrupt(conn: Connection, job_id: str, checkpoint_id: int, reason: str) -> bool:
    result = conn.execute(
        update(training_checkpoints)
        .where(
            training_checkpoints.c.id == checkpoint_id,
            training_checkpoints.c.job_id == job_id,
        )
        .values(corrupt_reason=reason[:2000])
    )
    return result.rowcount == 1


def record_point(
    conn: Connection,
    *,
    job_id: str,
    attempt_id: str,
    step: int,
    loss: float,
    learning_rate: float,
    now: float,
) -> None:
    """Adds a loss-curve point unless this attempt already reported this step or a later one
    (heartbeats repeat the last progress when nothing moved)."""
    newest = conn.execute(
        select(func.max(training_points.c.step)).where(
            training_points.c.job_id == job_id, training_points.c.attempt_id == attempt_id
        )
    ).scalar_one_or_none()
    if newest is not None and newest >= step:
        return
    conn.execute(
        insert(training_points).values(
            job_id=job_id,
            attempt_id=attempt_id,
            step=step,
            loss=loss,
            learning_rate=learning_rate,
            at=now,
        )
    )


def job_points(conn: Connection, job_id: str) -> list[PointRow]:
    rows = conn.execute(
        select(
            training_points.c.attempt_id,
            training_points.c.step,
            training_points.c.loss,
            training_points.c.learning_rate,
            training_points.c.at,
        )
        .where(training_points.c.job_id == job_id)
        .order_by(training_points.c.at, training_points.c.step)
    ).mappings()
    return [PointRow(**row) for row in rows]


def record_resume(
    conn: Connection, *, job_id: str, attempt_id: str, step: int, notes: list[str], now: float
) -> bool:
    """Records where the attempt started; False when it had reported already (a retry)."""
    known = conn.execute(
        select(training_attempts.c.attempt_id).where(training_attempts.c.attempt_id == attempt_id)
    ).first()
    if known is not None:
        return False
    conn.execute(
        insert(training_attempts).values(
            attempt_id=attempt_id,
            job_id=job_id,
            resumed_from_step=step,
            notes=json.dumps(notes),
            at=now,
        )
    )
    return True


def job_resumes(conn: Connection, job_id: str) -> dict[str, ResumeRow]:
    rows = conn.execute(
        select(training_attempts).where(training_attempts.c.job_id == job_id)
    ).mappings()
    return {
        row["attempt_id"]: ResumeRow(
            row["attempt_id"], row["resumed_from_step"], json.loads(row["notes"]), row["at"]
        )
        for row in rows
    }


def final_job_checkpoints(conn: Connection, limit: int) -> list[tuple[int, str]]:
    """(id, key) of checkpoints whose job is final (failed or cancelled ones keep theirs until
    swept; a succeeded job's are deleted at completion)."""
    rows = conn.execute(
        select(training_checkpoints.c.id, training_checkpoints.c.key)
        .join(jobs, jobs.c.id == training_checkpoints.c.job_id)
        .where(jobs.c.status.in_(("succeeded", "failed", "cancelled")))
        .order_by(training_checkpoints.c.id)
        .limit(limit)
    ).all()
    return [(row.id, row.key) for row in rows]
