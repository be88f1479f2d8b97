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
