"""The migrations build exactly the schema the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from imagefleet.store.database import EVENTS_CHANNEL, Database
from imagefleet.store.nodes import CLAIM_BLOCKS
from imagefleet.store.tables import metadata
from tests.conftest import Keys


def test_migrated_schema_matches_the_declared_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_upgrading_twice_is_harmless(db: Database) -> None:
    db.upgrade()


def test_the_queue_index_keeps_its_order_so_claims_never_sort_the_queue(db: Database) -> None:
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


def test_the_claims_retried_job_check_is_one_seek_in_its_partial_index(db: Database) -> None:
    """Every claim asks whether a retried job is queued (`store.nodes.claim_blocks`); read any
    other way, that is a scan of every queued job (on SQLite without statistics it was)."""
    with db.engine.connect() as conn:
        blocks = CLAIM_BLOCKS.params(node="n")
        statement = str(blocks.compile(conn, compile_kwargs={"literal_binds": True}))
        if db.is_sqlite:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")
            plan = " ".join(str(row[-1]) for row in rows)
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: as when full
            rows = conn.exec_driver_sql(f"EXPLAIN {statement}")
            plan = " ".join(str(row[0]) for row in rows)
        assert "ix_jobs_queued_retried" in plan, plan


def test_jobs_from_before_kinds_and_combos_stay_readable_and_claimable(tmp_path: Path) -> None:
    """A database at 0009 (one model per job, no combos) with a queued txt2img job in it:
    after the upgrade the job shows its combo and a worker can claim it."""
    from alembic import command
    from alembic.config import Config

    from imagefleet.config import Settings
    from imagefleet.orchestrator.lifecycle import JobLifecycle
    from imagefleet.store.database import MIGRATIONS_DIR
    from imagefleet.store.job_models import combos
    from imagefleet.store.jobs import get_job
    from imagefleet.store.keys import ApiKey
    from imagefleet.worker_protocol import ClaimRequest

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    with db.engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
        conn.execute(
            text(
                "INSERT INTO api_keys (id, name, scope, tier, secret_hash, created_at) VALUES "
                "('k1', 'old', 'client', 'free', 'x', 1), ('k2', 'w', 'worker', 'free', 'y', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO models (name, version, kind, source, sha256, size_bytes, created_at)"
                " VALUES ('demo', 1, 'checkpoint', '/m', :sha, 1, 1)"
            ),
            {"sha": "d" * 64},
        )
        params = '{"prompt": "old", "model": "demo", "width": 64, "height": 64, "steps": 2}'
        conn.execute(
            text(
                "INSERT INTO jobs (id, owner_key_id, tier, kind, status, priority, params, "
                "model_id, pixels, created_at, progress_step, progress_total, attempts, "
                "max_attempts) VALUES ('j1', 'k1', 'free', 'txt2img', 'queued', 0, :p, 1, "
                "4096, 1, 0, 0, 0, 3)"
            ),
            {"p": params},
        )
    db.upgrade()
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url)
    lifecycle = JobLifecycle(db, settings)
    with db.read() as conn:
        row = get_job(conn, "j1")
        combo = combos(conn, ["j1"])["j1"]
    assert row is not None and row.combo_key and len(row.combo_key) == 64
    assert [(item.role.value, item.model.name) for item in combo] == [("checkpoint", "demo")]
    worker_key = ApiKey(
        id="k2", name="w", scope="worker", tier="free", created_at=1.0, revoked_at=None
    )
    assignment = lifecycle.claim(worker_key, ClaimRequest(worker_id="w", node_id="n"))
    assert assignment is not None and assignment.job_id == "j1"
    assert assignment.params["prompt"] == "old"
    assert [m.sha256 for m in assignment.models] == ["d" * 64]
    db.dispose()


def test_an_event_row_announces_itself_to_every_replica_on_postgresql(
    db: Database, keys: Keys
) -> None:
    """The event log's NOTIFY is the insert trigger's (migration 0015): a listener on another
    connection hears the committed row, with the job and owner as payload; SQLite, which has
    no NOTIFY, gets no trigger (its streams are woken in-process)."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            triggers = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            assert list(triggers) == []
            return
    import psycopg

    from imagefleet.store import events
    from imagefleet.store.jobs import insert_job

    owner = keys.alice.id
    with db.write() as conn:
        job = insert_job(conn, **_QUEUED_JOB, owner_key_id=owner).id
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {EVENTS_CHANNEL}")
        with db.write() as conn:
            events.record(conn, job_id=job, owner_key_id=owner, event="queued", data={}, now=1.0)
        heard = [note.payload for note in listener.notifies(timeout=5, stop_after=1)]
    assert heard == [f"{job} {owner}"]


_QUEUED_JOB = {
    "id": "00000000000000000000000000000001",
    "tier": "free",
    "kind": "txt2img",
    "status": "queued",
    "priority": 0,
    "params": {},
    "pixels": 64 * 64,
    "created_at": 1.0,
    "max_attempts": 3,
}
