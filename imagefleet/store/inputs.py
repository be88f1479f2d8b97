"""Uploaded input files (init images, masks) and the jobs that read them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from imagefleet.store.ids import plausible_id
from imagefleet.store.tables import inputs, job_inputs


@dataclass(frozen=True)
class InputRow:
    id: str
    owner_key_id: str
    key: str
    content_type: str
    size_bytes: int
    sha256: str
    width: int
    height: int
    created_at: float
    images: int | None = None  # dataset zips only
    uncaptioned: int | None = None


def insert_input(conn: Connection, row: InputRow) -> None:
    conn.execute(insert(inputs).values(**row.__dict__))


def owned_inputs(conn: Connection, owner_key_id: str, input_ids: list[str]) -> dict[str, InputRow]:
    """Those of the ids that exist and belong to the owner."""
    wanted = [i for i in input_ids if plausible_id(i)]
    if not wanted:
        return {}
    rows = conn.execute(
        select(inputs).where(inputs.c.id.in_(wanted), inputs.c.owner_key_id == owner_key_id)
    ).mappings()
    return {row["id"]: InputRow(**row) for row in rows}


def link_inputs(conn: Connection, job_id: str, named: dict[str, str]) -> None:
    """Records which input fills which param of the job."""
    if named:
        conn.execute(
            insert(job_inputs),
            [{"job_id": job_id, "name": name, "input_id": iid} for name, iid in named.items()],
        )


def job_input_rows(conn: Connection, job_id: str) -> dict[str, InputRow]:
    """The job's inputs by the param they fill."""
    rows = conn.execute(
        select(job_inputs.c.name, inputs)
        .join(inputs, inputs.c.id == job_inputs.c.input_id)
        .where(job_inputs.c.job_id == job_id)
    ).mappings()
    found = {}
    for row in rows:
        values = dict(row)
        name = values.pop("name")
        found[name] = InputRow(**values)
    return found
