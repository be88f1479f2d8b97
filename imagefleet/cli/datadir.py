"""Which data directory a command uses, found the same way by every command, and said aloud.

The data directory holds the SQLite database, the artifacts, the demo model and the keys that
`imagefleet up` stores. It is looked for in this order: the `--data-dir` flag,
`$IMAGEFLEET_DATA_DIR`, `./.imagefleet` in the current directory (where `scripts/up` keeps it),
then the per-user default (`~/.local/share/imagefleet` on Linux, the platform's equivalent
elsewhere). Only the commands that set a fleet up (`up`, `serve`, `db upgrade`,
`models create-demo`) may create one; every other command refuses to run on a directory that
has no database, so that a command run from another folder never quietly works on a new,
empty database and reports nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from imagefleet.cli.common import fail, note

if TYPE_CHECKING:
    from imagefleet.config import Settings
    from imagefleet.store.database import Database

ENV_VAR = "IMAGEFLEET_DATA_DIR"
LOCAL_NAME = ".imagefleet"
DB_FILE = "imagefleet.db"
APP_NAME = "imagefleet"


class Source(StrEnum):
    flag = "--data-dir"
    env = f"${ENV_VAR}"
    local = f"./{LOCAL_NAME} in the current directory"
    user = "the per-user default"


@dataclass(frozen=True)
class DataDir:
    path: Path  # absolute
    source: Source

    def describe(self) -> str:
        return f"{self.path} (from {self.source.value})"


def user_data_dir() -> Path:
    """The per-user default, e.g. ~/.local/share/imagefleet (XDG_DATA_HOME is honoured)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def candidates(flag: Path | None) -> list[DataDir]:
    """Where to look, first match wins: flag and variable always match when given."""
    found: list[DataDir] = []
    if flag is not None:
        found.append(DataDir(flag.expanduser().resolve(), Source.flag))
    if value := os.environ.get(ENV_VAR):
        found.append(DataDir(Path(value).expanduser().resolve(), Source.env))
    found.append(DataDir(Path(LOCAL_NAME).resolve(), Source.local))
    found.append(DataDir(user_data_dir(), Source.user))
    return found


def choose_data_dir(flag: Path | None) -> DataDir:
    """The first candidate that was asked for (flag, variable) or exists, else the per-user
    default; nothing is checked or created."""
    options = candidates(flag)
    explicit = [option for option in options if option.source in (Source.flag, Source.env)]
    if explicit:
        return explicit[0]
    return next((option for option in options if option.path.is_dir()), options[-1])


def found_by_default() -> Path:
    """What a command run here with no flag and no variable would use: ./.imagefleet if it
    exists, else the per-user default."""
    local = Path(LOCAL_NAME).resolve()
    return local if local.is_dir() else user_data_dir()


def find_data_dir(flag: Path | None, *, create: bool) -> DataDir:
    """The data directory to use. With ``create`` it is made if missing; without, it must
    already hold a database (or one must be configured elsewhere)."""
    chosen = choose_data_dir(flag)
    if create:
        chosen.path.mkdir(parents=True, exist_ok=True)
    elif not _has_database(chosen.path):
        raise fail(_nothing_found(chosen, candidates(flag)))
    return chosen


def _has_database(path: Path) -> bool:
    """A configured database URL (PostgreSQL) lives elsewhere; SQLite lives in the folder."""
    return bool(os.environ.get("IMAGEFLEET_DATABASE_URL")) or (path / DB_FILE).is_file()


def _nothing_found(chosen: DataDir, options: list[DataDir]) -> str:
    if chosen.source in (Source.flag, Source.env) or chosen.path.is_dir():
        where = f"no imagefleet database in {chosen.describe()}"
    else:
        looked = ", ".join(str(option.path) for option in options)
        where = f"no imagefleet data directory found (looked in {looked})"
    return (
        f"{where}; start a fleet with `imagefleet up` (it creates one), or point --data-dir "
        f"or ${ENV_VAR} at an existing one"
    )


def use_data_dir(flag: Path | None, *, create: bool = False, quiet: bool = False) -> DataDir:
    """Finds the data directory, says which one on stderr, and exports it to the settings
    (and to child processes) through ${ENV_VAR}."""
    found = find_data_dir(flag, create=create)
    os.environ[ENV_VAR] = str(found.path)
    if not quiet:
        note(f"data directory: {found.describe()}")
    return found


def settings_for(flag: Path | None, *, create: bool = False, quiet: bool = False) -> Settings:
    """The settings for a command that works on local state."""
    from imagefleet.config import Settings

    use_data_dir(flag, create=create, quiet=quiet)
    return Settings()


def open_database(settings: Settings) -> Database:
    """The database with its schema up to date, or a clear exit when it cannot be reached."""
    from imagefleet.store.database import Database, DatabaseUnavailable

    db = Database(settings.database_url)
    try:
        db.upgrade()
    except DatabaseUnavailable as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    return db


DataDirOption = typer.Option(
    None,
    "--data-dir",
    help=f"Data directory (SQLite, artifacts, models, stored keys). Default: ${ENV_VAR}, else "
    f"./{LOCAL_NAME} if it exists, else the per-user default (~/.local/share/{APP_NAME}).",
)
