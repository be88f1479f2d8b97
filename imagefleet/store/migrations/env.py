"""Alembic environment: always runs on the connection handed over by `Database.upgrade`."""

from alembic import context

from imagefleet.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
