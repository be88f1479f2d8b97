"""One record of what a worker holds (`worker_state`): written by the claim only when the report
changed, read by the scheduler and the dashboard alike (the `workers` table no longer keeps a
copy)."""

from __future__ import annotations

from sqlalchemy import select

from imagefleet.config import Settings
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.overview import worker_rows
from imagefleet.store.tables import worker_state, workers
from tests.conftest import Clock, Keys
from tests.unit.test_claim_policy import checkpoints, claim

__all__ = ["checkpoints"]  # the fixture, imported for its tests


def updated_at(db: Database, worker_id: str) -> float:
    with db.read() as conn:
        row = conn.execute(
            select(worker_state.c.updated_at).where(worker_state.c.worker_id == worker_id)
        ).one()
    return float(row.updated_at)


def test_a_repeated_report_is_not_rewritten_and_a_changed_one_is_read_by_the_dashboard(
    db: Database,
    settings: Settings,
    keys: Keys,
    checkpoints: dict[str, Model],
    clock: Clock,
) -> None:
    alpha, beta = checkpoints["alpha"], checkpoints["beta"]
    first = JobLifecycle(db, settings, clock=clock)
    second = JobLifecycle(db, settings, clock=clock)  # another replica: its own process cache
    assert claim(first, keys, "w1", resident=alpha, cached=(alpha, beta)) is None
    written = updated_at(db, "w1")
    clock.advance(2)
    assert claim(second, keys, "w1", resident=alpha, cached=(alpha, beta)) is None
    assert updated_at(db, "w1") == written, "the same report is not written again"
    clock.advance(2)
    assert claim(second, keys, "w1", resident=beta, cached=(alpha, beta)) is None
    assert updated_at(db, "w1") == written + 4, "a changed report is written"
    with db.read() as conn:
        (row,) = worker_rows(conn, seen_since=0.0)
        columns = set(conn.execute(select(workers).limit(1)).keys())
    assert row.resident_models == [beta.sha256]
    assert (row.cached_count, row.cached_first) == (2, [alpha.sha256, beta.sha256])
    assert "resident_models" not in columns and "cached_models" not in columns
    clock.advance(20)  # past the freshness bound: the same report refreshes the sighting
    assert claim(second, keys, "w1", resident=beta, cached=(alpha, beta)) is None
    assert updated_at(db, "w1") == written + 24
