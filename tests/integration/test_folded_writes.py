"""The folded writes (store/folded*.py) on both stores: PostgreSQL's one-statement forms and
SQLite's one-by-one path must leave the same rows, and a compare-and-set that loses must write
nothing at all: no attempt row, no event, no turn, no file."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from imagefleet.protocol import JobStatus, ModelRole
from imagefleet.store import folded as folded_sql
from imagefleet.store import folded_claim as claim_sql
from imagefleet.store import folded_submit as submit_sql
from imagefleet.store import jobs as job_sql
from imagefleet.store.database import AFTER_COMMIT, Database
from imagefleet.store.job_models import JobModel
from imagefleet.store.models import Model
from imagefleet.store.tables import artifacts, attempts, job_events, job_models
from imagefleet.store.tables_scheduling import owner_service
from tests.conftest import Keys


def _queue(conn: Connection, keys: Keys, model: Model, job_id: str = "j1") -> job_sql.JobRow:
    values = dict(
        id=job_id,
        owner_key_id=keys.alice.id,
        tier="free",
        kind="txt2img",
        status=JobStatus.queued.value,
        priority=0,
        params={"prompt": "a lighthouse"},
        model_id=model.id,
        pixels=4096,
        created_at=10.0,
        max_attempts=3,
    )
    combo = [JobModel(ModelRole.checkpoint, model, None)]
    return submit_sql.queue(conn, values, combo, {}, {"status": "queued", "attempts": 0})


def _attempt(keys: Keys, attempt_id: str) -> dict[str, Any]:
    return dict(attempt_id=attempt_id, worker_id="w", node_id="n", worker_key_id=keys.worker.id)


def _events(conn: Connection, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        select(job_events.c.event, job_events.c.data)
        .where(job_events.c.job_id == job_id)
        .order_by(job_events.c.id)
    )
    return [(event, json.loads(data)) for event, data in rows]


def _count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_lifecycle_of_folded_writes_leaves_the_rows_each_step_names(
    db: Database, keys: Keys, model: Model
) -> None:
    with db.write() as conn:
        row = _queue(conn, keys, model)
        assert row.status is JobStatus.queued and row.attempts == 0
        assert conn.info[AFTER_COMMIT] == [("j1", keys.alice.id)]
    with db.write() as conn:
        assert _count(conn, job_models) == 1
        taken = claim_sql.take(
            conn,
            "j1",
            _attempt(keys, "a1"),
            lease_expires_at=50.0,
            placement="oldest",
            now=20.0,
            owner_turn=keys.alice.id,
        )
        assert taken is not None and taken.row.attempts == 1
        assert taken.row.status is JobStatus.running
    with db.write() as conn:
        seq = conn.execute(select(attempts.c.seq).where(attempts.c.id == "a1")).scalar_one()
        assert seq == 1
        beats = [
            folded_sql.beat(
                conn, "a1", keys.worker.id, step=step, total=4, lease_expires_at=60.0, now=21.0
            )
            for step in (1, 1, 2)
        ]
        assert all(beat is not None and beat.renewed for beat in beats)
        assert (
            folded_sql.beat(
                conn, "a1", keys.alice.id, step=3, total=4, lease_expires_at=60.0, now=21.0
            )
            is None
        )  # not this key's attempt
    files = [
        dict(
            key="outputs/j1/a1/0.png",
            job_id="j1",
            attempt_id="a1",
            idx=0,
            content_type="image/png",
            size_bytes=3,
            sha256="e" * 64,
            seed=7,
            width=64,
            height=64,
            created_at=22.0,
        )
    ]
    with db.write() as conn:
        assert folded_sql.succeed(
            conn,
            row,
            "a1",
            files=files,
            stage_timings={"inference": 1.5},
            event={"status": "succeeded"},
            now=23.0,
        )
    with db.read() as conn:
        done = job_sql.get_job(conn, "j1")
        assert done is not None and done.status is JobStatus.succeeded
        assert done.result_attempt_id == "a1" and done.stage_timings == {"inference": 1.5}
        outcome = conn.execute(select(attempts.c.outcome).where(attempts.c.id == "a1"))
        assert outcome.scalar_one() == "succeeded"
        stored = conn.execute(select(artifacts.c.accepted, artifacts.c.seed)).one()
        assert tuple(stored) == (True, 7)
        assert _events(conn, "j1") == [
            ("queued", {"status": "queued", "attempts": 0}),
            ("running", {"status": "running", "attempt": 1}),
            ("progress", {"step": 1, "total_steps": 4, "fraction": 0.25}),
            ("progress", {"step": 2, "total_steps": 4, "fraction": 0.5}),
            ("succeeded", {"status": "succeeded"}),
        ]


def test_a_lost_compare_and_set_writes_nothing(db: Database, keys: Keys, model: Model) -> None:
    with db.write() as conn:
        row = _queue(conn, keys, model)
        claim = dict(lease_expires_at=50.0, placement=None, now=20.0, owner_turn=keys.alice.id)
        assert claim_sql.take(conn, "j1", _attempt(keys, "a1"), **claim) is not None
    with db.write() as conn:
        turns = _count(conn, owner_service)
        # The job is running: a second claim of it loses.
        assert claim_sql.take(conn, "j1", _attempt(keys, "a2"), **claim) is None
        assert _count(conn, attempts) == 1 and _count(conn, owner_service) == turns
        # An attempt that does not hold the job: no lease, no progress.
        beat = folded_sql.beat(
            conn, "a1", keys.worker.id, step=1, total=4, lease_expires_at=60.0, now=21.0
        )
        assert beat is not None and beat.renewed
        conn.execute(job_sql.jobs.update().values(current_attempt_id="other"))
        stale = folded_sql.beat(
            conn, "a1", keys.worker.id, step=2, total=4, lease_expires_at=60.0, now=21.0
        )
        assert stale is not None and not stale.renewed
        ended = folded_sql.succeed(
            conn, row, "a1", files=[], stage_timings={}, event={"status": "succeeded"}, now=23.0
        )
        assert not ended
        assert [event for event, _ in _events(conn, "j1")] == ["queued", "running", "progress"]
        outcome = conn.execute(select(attempts.c.outcome).where(attempts.c.id == "a1"))
        assert outcome.scalar_one() == "running"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_take_reports_an_owner_turn_another_claim_holds_as_settled(
    db: Database, keys: Keys, model: Model
) -> None:
    """PostgreSQL: the take moves its owner's turn unless another open claim of that owner holds
    the row (moving the same turn at the same moment) or the turn is already later. Either way
    there is nothing left to record (`turn_recorded`), so the claim sends no second statement
    for it; only an owner with no row yet needs one (`owner_service.record_served`)."""
    claim = dict(lease_expires_at=50.0, placement=None, owner_turn=keys.alice.id)
    with db.write() as conn:
        for job_id in ("j1", "j2", "j3", "j4"):
            _queue(conn, keys, model, job_id)
        first = claim_sql.take(conn, "j1", _attempt(keys, "a1"), now=20.0, **claim)
        assert first is not None and not first.turn_recorded  # a new owner: no row to move
    with db.write() as conn:
        conn.execute(owner_service.insert().values(owner_key_id=keys.alice.id, served_at=20.0))
    with db.write() as holding:
        moved = claim_sql.take(holding, "j2", _attempt(keys, "a2"), now=21.0, **claim)
        assert moved is not None and moved.turn_recorded
        with db.write() as racing:  # the owner's row is held by `holding`'s open transaction
            held = claim_sql.take(racing, "j3", _attempt(keys, "a3"), now=22.0, **claim)
            assert held is not None and held.turn_recorded
    with db.write() as conn:
        later = claim_sql.take(conn, "j4", _attempt(keys, "a4"), now=5.0, **claim)
        assert later is not None and later.turn_recorded  # already later: never moved back
        served = conn.execute(select(owner_service.c.served_at)).scalar_one()
        assert served == 21.0
