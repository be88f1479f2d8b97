"""IMAGEFLEET_MIGRATE_ON_START=0: replicas behind a migrations job check the schema instead of
migrating, and refuse to start on a schema their release does not match."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imagefleet.cli import app as cli
from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database, SchemaNotCurrent


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **overrides
    )


def test_migrate_on_start_is_on_by_default_and_migrates(tmp_path: Path) -> None:
    config = settings(tmp_path)
    assert config.migrate_on_start
    with TestClient(create_app(config, run_duties=False)) as client:
        assert client.get("/healthz").status_code == 200
    Database(config.database_url).check_schema()


def test_without_migrating_a_replica_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    config = settings(tmp_path, migrate_on_start=False)
    with (
        pytest.raises(SchemaNotCurrent, match="run `imagefleet db upgrade`"),
        TestClient(create_app(config, run_duties=False)),
    ):
        pass


def test_after_the_migrations_job_a_replica_starts_without_migrating(tmp_path: Path) -> None:
    config = settings(tmp_path, migrate_on_start=False)
    Database(config.database_url).upgrade()  # what `imagefleet db upgrade` does
    with TestClient(create_app(config, run_duties=False)) as client:
        assert client.get("/healthz").status_code == 200


def test_serve_exits_with_code_2_and_the_reason_when_the_schema_is_not_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFLEET_MIGRATE_ON_START", "0")
    monkeypatch.setenv("IMAGEFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "schema revision none" in result.output
