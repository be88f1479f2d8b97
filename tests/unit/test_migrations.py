"""The migrations build exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from imagefleet.store.database import Database
from imagefleet.store.tables import metadata


def test_migrated_schema_matches_the_declared_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_upgrading_twice_is_harmless(db: Database) -> None:
    db.upgrade()


def test_the_queue_index_keeps_its_order_so_claims_never_sort_the_queue(db: Database) -> None:
    from sqlalchemy import text

    query = (
        "SELECT id FROM jobs WHERE status = 'queued' AND kind IN ('txt2img') "
        "ORDER BY priority DESC, created_at LIMIT 16"
    )
    with db.engine.connect() as conn:
        if db.is_sqlite:
            plan = " ".join(
                str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {query}"))
            )
            assert "ix_jobs_queue" in plan and "TEMP B-TREE" not in plan, plan
        else:
            definition = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_queue'")
            ).scalar_one()
            assert "priority DESC" in definition, definition
