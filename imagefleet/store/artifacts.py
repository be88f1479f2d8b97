"""Artifact SQL: files attempts stored (outputs, later checkpoints) and which were accepted.

A file is recorded unaccepted when uploaded; completion accepts the winning attempt's files in
the same transaction that marks the job succeeded, so a job never shows another attempt's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imagefleet.store.tables import artifacts


@dataclass(frozen=True)
class ArtifactRow:
    key: str
    job_id: str
    attempt_id: str
    idx: int
    content_type: str
    size_bytes: int
    sha256: str
    seed: int | None
    width: int | None
    height: int | None


def record_artifact(conn: Connection, **values: Any) -> None:
    """Records an uploaded file; a re-upload of the same index by the same attempt replaces it."""
    conn.execute(artifacts.delete().where(artifacts.c.key == values["key"]))
    conn.execute(insert(artifacts).values(accepted=False, **values))


def record_accepted(conn: Connection, files: list[dict[str, Any]]) -> None:
    """Records files sent with the completion itself, already accepted and with their
    metadata, in one statement; a file the attempt uploaded earlier under the same key is
    replaced. Only for the completing transaction, which makes the job succeed with them."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(artifacts).values([{**f, "accepted": True} for f in files])
    replace = {name: statement.excluded[name] for name in (*files[0], "accepted") if name != "key"}
    conn.execute(statement.on_conflict_do_update(index_elements=[artifacts.c.key], set_=replace))


def attempt_artifacts(conn: Connection, attempt_id: str) -> list[ArtifactRow]:
    rows = conn.execute(
        select(artifacts).where(artifacts.c.attempt_id == attempt_id).order_by(artifacts.c.idx)
    ).mappings()
    return [_to_artifact(row) for row in rows]


def accept_artifacts(conn: Connection, attempt_id: str, outputs: dict[int, dict[str, Any]]) -> int:
    """Marks the winning attempt's files as the job's outputs, with their metadata; returns how
    many were accepted."""
    accepted = 0
    for idx, meta in outputs.items():
        accepted += conn.execute(
            update(artifacts)
            .where(artifacts.c.attempt_id == attempt_id, artifacts.c.idx == idx)
            .values(accepted=True, **meta)
        ).rowcount
    return accepted


def job_outputs(conn: Connection, job_ids: list[str]) -> dict[str, list[ArtifactRow]]:
    """Accepted outputs of several jobs at once (one query for a whole page of jobs)."""
    found: dict[str, list[ArtifactRow]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = conn.execute(
        select(artifacts)
        .where(artifacts.c.job_id.in_(job_ids), artifacts.c.accepted.is_(True))
        .order_by(artifacts.c.job_id, artifacts.c.idx)
    ).mappings()
    for row in rows:
        found[row["job_id"]].append(_to_artifact(row))
    return found


def artifact_keys(conn: Connection, job_ids: list[str]) -> list[str]:
    """Every file stored for these jobs, from any attempt, accepted or not."""
    if not job_ids:
        return []
    return list(
        conn.execute(select(artifacts.c.key).where(artifacts.c.job_id.in_(job_ids))).scalars()
    )


def _to_artifact(row: Any) -> ArtifactRow:
    return ArtifactRow(
        row["key"],
        row["job_id"],
        row["attempt_id"],
        row["idx"],
        row["content_type"],
        row["size_bytes"],
        row["sha256"],
        row["seed"],
        row["width"],
        row["height"],
    )
