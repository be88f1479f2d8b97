"""Artifact SQL: files attempts stored (outputs, later checkpoints) and which were accepted.

A file is recorded unaccepted when uploaded; completion accepts the winning attempt's files in
the same transaction that marks the job succeeded, so a job never shows another attempt's files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imagefleet.store.tables import artifacts

# Built once with bound parameters (see store/jobs.py): every completion runs some of them.
_DELETE_KEY = artifacts.delete().where(artifacts.c.key == bindparam("gone"))
_INSERT = insert(artifacts)
_OF_ATTEMPT = (
    select(artifacts)
    .where(artifacts.c.attempt_id == bindparam("attempt"))
    .order_by(artifacts.c.idx)
)
# Execute-time values of other columns (the file's metadata) join the SET clause.
_ACCEPT = (
    update(artifacts)
    .where(artifacts.c.attempt_id == bindparam("attempt"), artifacts.c.idx == bindparam("index"))
    .values(accepted=True)
)
_OUTPUTS = (
    select(artifacts)
    .where(
        artifacts.c.job_id.in_(bindparam("jobs", expanding=True)), artifacts.c.accepted.is_(True)
    )
    .order_by(artifacts.c.job_id, artifacts.c.idx)
)


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
    conn.execute(_DELETE_KEY, {"gone": values["key"]})
    conn.execute(_INSERT, {"accepted": False, **values})


def record_accepted(conn: Connection, files: list[dict[str, Any]]) -> None:
    """Records files sent with the completion itself, already accepted and with their
    metadata, in one statement; a file the attempt uploaded earlier under the same key is
    replaced. Only for the completing transaction, which makes the job succeed with them."""
    statement = _upsert_accepted(conn.dialect.name, tuple(files[0]))
    conn.execute(statement, [{**f, "accepted": True} for f in files])


@functools.lru_cache(maxsize=16)
def _upsert_accepted(dialect: str, columns: tuple[str, ...]) -> Insert:
    """`record_accepted`'s statement for these columns, built once."""
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(artifacts)
    replace = {name: statement.excluded[name] for name in (*columns, "accepted") if name != "key"}
    return statement.on_conflict_do_update(index_elements=[artifacts.c.key], set_=replace)


def attempt_artifacts(conn: Connection, attempt_id: str) -> list[ArtifactRow]:
    rows = conn.execute(_OF_ATTEMPT, {"attempt": attempt_id}).mappings()
    return [_to_artifact(row) for row in rows]


def accept_artifacts(conn: Connection, attempt_id: str, outputs: dict[int, dict[str, Any]]) -> int:
    """Marks the winning attempt's files as the job's outputs, with their metadata; returns how
    many were accepted."""
    accepted = 0
    for idx, meta in outputs.items():
        params = {"attempt": attempt_id, "index": idx, **meta}
        accepted += conn.execute(_ACCEPT, params).rowcount
    return accepted


def job_outputs(conn: Connection, job_ids: list[str]) -> dict[str, list[ArtifactRow]]:
    """Accepted outputs of several jobs at once (one query for a whole page of jobs)."""
    found: dict[str, list[ArtifactRow]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = conn.execute(_OUTPUTS, {"jobs": list(job_ids)}).mappings()
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
