"""Options and helpers shared by the command groups."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from imagefleet.config import Settings
from imagefleet.store.database import Database, DatabaseUnavailable

DataDirOption = typer.Option(
    None,
    "--data-dir",
    help="Data directory (SQLite, artifacts, models). "
    "Default: $IMAGEFLEET_DATA_DIR or ./.imagefleet",
)
DEFAULT_URL = "http://127.0.0.1:8000"
CLIENT_KEY_FILE = "client.key"
WORKER_KEY_FILE = "worker.key"


def settings_for(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["IMAGEFLEET_DATA_DIR"] = str(data_dir)
    return Settings()


def open_database(settings: Settings) -> Database:
    """The database with its schema up to date, or a clear exit when it cannot be reached."""
    db = Database(settings.database_url)
    try:
        db.upgrade()
    except DatabaseUnavailable as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    return db


def now() -> float:
    return time.time()


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)
