"""Each job's resolved combo: the exact model versions it needs, in which role, with weights."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select

from imagefleet.protocol import ModelRole
from imagefleet.store.models import Model, to_model
from imagefleet.store.tables import job_models, models

# Built once with bound parameters (see store/jobs.py): every submit and claim runs them.
_INSERT = insert(job_models)
_COMBOS = (
    select(job_models.c.job_id, job_models.c.role, job_models.c.weight, models)
    .join(models, models.c.id == job_models.c.model_id)
    .where(job_models.c.job_id.in_(bindparam("jobs", expanding=True)))
    .order_by(job_models.c.job_id, job_models.c.position)
)


@dataclass(frozen=True)
class JobModel:
    role: ModelRole
    model: Model
    weight: float | None = None


def insert_job_models(conn: Connection, job_id: str, combo: list[JobModel]) -> None:
    if combo:
        conn.execute(
            _INSERT,
            [
                {
                    "job_id": job_id,
                    "position": position,
                    "role": item.role.value,
                    "model_id": item.model.id,
                    "sha256": item.model.sha256,
                    "weight": item.weight,
                }
                for position, item in enumerate(combo)
            ],
        )


def combos(conn: Connection, job_ids: list[str]) -> dict[str, list[JobModel]]:
    """The combos of several jobs at once, in the order they were named."""
    found: dict[str, list[JobModel]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = conn.execute(_COMBOS, {"jobs": list(job_ids)}).mappings()
    for row in rows:
        found[row["job_id"]].append(JobModel(ModelRole(row["role"]), to_model(row), row["weight"]))
    return found
