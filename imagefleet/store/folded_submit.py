"""A submit's writes, folded into one statement on PostgreSQL (see `store.folded`): the job,
its combo, its inputs, its queued event and the NOTIFY that wakes claims."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, literal, select, true

from imagefleet.protocol import JobStatus
from imagefleet.store import events as event_sql
from imagefleet.store import inputs as input_sql
from imagefleet.store import job_models as job_model_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import WORK_CHANNEL
from imagefleet.store.folded import event_rows, insert_events, record_event, unnest
from imagefleet.store.tables import job_inputs, job_models, jobs


def queue(
    conn: Connection,
    values: dict[str, Any],
    combo: list[job_model_sql.JobModel],
    inputs: dict[str, str],
    event: dict[str, Any],
) -> job_sql.JobRow:
    """A new job with `values` (`jobs.insert_job`, which also wakes claims), its combo
    (`job_models.insert_job_models`), the inputs it reads (`inputs.link_inputs`: param name ->
    input id) and its queued event with `event` as data: one statement on PostgreSQL."""
    now = values["created_at"]
    if conn.dialect.name != "postgresql":
        row = job_sql.insert_job(conn, **values)
        job_model_sql.insert_job_models(conn, row.id, combo)
        input_sql.link_inputs(conn, row.id, inputs)
        record_event(conn, row.id, row.owner_key_id, JobStatus.queued.value, event, now)
        return row
    row_values = job_sql.insert_values(values)
    params = {f"job_{name}": value for name, value in row_values.items()}
    params |= {
        "model_position": list(range(len(combo))),
        "model_role": [item.role.value for item in combo],
        "model_model_id": [item.model.id for item in combo],
        "model_sha256": [item.model.sha256 for item in combo],
        "model_weight": [item.weight for item in combo],
        "input_name": list(inputs),
        "input_input_id": list(inputs.values()),
        "event_data": event_sql.dumps(event),
        "now": now,
        "hint": job_sql.work_hint(values).encode(),
    }
    found = dict(conn.execute(_statement(tuple(row_values)), params).mappings().one())
    found.pop("notified")
    row = job_sql.to_job(found)
    event_sql.wake_after_commit(conn, row.id, row.owner_key_id)
    return row


@functools.lru_cache(maxsize=8)
def _statement(columns: tuple[str, ...]) -> Any:
    """The folded submit for a job row with these columns, built once."""
    job = (
        insert(jobs)
        .values({name: bindparam(f"job_{name}", type_=jobs.c[name].type) for name in columns})
        .returning(*jobs.c)
        .cte("job")
    )
    combo = unnest("model", job_models, ("position", "role", "model_id", "sha256", "weight"))
    with_combo = insert(job_models).from_select(
        ["job_id", *combo.c.keys()], select(job.c.id, *combo.c).join(combo, true())
    )
    named = unnest("input", job_inputs, ("name", "input_id"))
    with_inputs = insert(job_inputs).from_select(
        ["job_id", *named.c.keys()], select(job.c.id, *named.c).join(named, true())
    )
    queued = insert_events(
        event_rows(
            job, job.c.id, job.c.owner_key_id, JobStatus.queued.value, bindparam("event_data")
        )
    )
    # The NOTIFY is delivered at commit, so never before the job is visible.
    notified = func.pg_notify(literal(WORK_CHANNEL), bindparam("hint")).label("notified")
    return select(*job.c, notified).add_cte(
        with_combo.cte("combo"), with_inputs.cte("inputs"), queued.cte("queued")
    )
