"""On PostgreSQL, a new event row announces itself: an AFTER INSERT trigger on `job_events`
sends the NOTIFY that wakes every replica's event streams (payload `<job id> <owner key id>`).
Before, each event was two statements from the orchestrator (the insert, then `pg_notify`); the
trigger does the same inside the insert, so a lifecycle's four events cost four statements, not
eight. SQLite has no NOTIFY (streams there are woken in-process): nothing to do.

Revision ID: event_notify_trigger
Revises: queued_retried
"""

from alembic import op

revision = "event_notify_trigger"
down_revision = "queued_retried"
branch_labels = None
depends_on = None

# The channel is imagefleet.store.database.EVENTS_CHANNEL, written out: a migration must not
# change when the code does.
CREATE_FUNCTION = """
CREATE FUNCTION imagefleet_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagefleet_events', NEW.job_id || ' ' || NEW.owner_key_id);
    RETURN NULL;
END
$$
"""
CREATE_TRIGGER = """
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
FOR EACH ROW EXECUTE FUNCTION imagefleet_event_notify()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE_FUNCTION)
        op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS job_events_notify ON job_events")
        op.execute("DROP FUNCTION IF EXISTS imagefleet_event_notify()")
