"""Operator commands that act on the database directly: keys, models, migrations.

The store is imported inside the commands: `imagefleet submit` and `imagefleet jobs` need none
of it, and SQLAlchemy with Alembic would double their start-up time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from imagefleet.cli.common import fail, now
from imagefleet.cli.datadir import DataDirOption, open_database, settings_for
from imagefleet.cli.tables import print_table, when
from imagefleet.hashing import OnBytes, path_size
from imagefleet.models.registry import (
    REMOTE_PREFIXES,
    Registration,
    RegistrationError,
    register,
)
from imagefleet.protocol import ModelBase, ModelKind

if TYPE_CHECKING:
    from imagefleet.config import Settings
    from imagefleet.store.models import Model

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Register and list models.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
DEMO_NAME = "demo"
SCOPE_NAMES = ("client", "worker", "admin", "deploy")
NO_TIER = "-"  # what listings show as the tier of worker and admin keys, which have none


def default_tier(settings: Settings) -> str:
    """`free` when configured, else the lowest-priority tier."""
    tiers = settings.tier_priority
    if "free" in tiers:
        return "free"
    return min(tiers, key=lambda name: tiers[name])


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="A label for the key, e.g. the team using it."),
    scope: str = typer.Option(
        "client",
        "--scope",
        help="One of: client, worker, admin, deploy (a client key that may also deploy).",
    ),
    tier: str | None = typer.Option(
        None,
        "--tier",
        help="For client keys: a priority tier configured in IMAGEFLEET_TIER_PRIORITY "
        "(default tiers: free, paid). Default: free.",
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from imagefleet.store.keys import create_key

    if scope not in SCOPE_NAMES:
        raise fail(f"--scope must be one of {', '.join(SCOPE_NAMES)}, got {scope!r}")
    settings = settings_for(data_dir)
    if scope not in ("client", "deploy") and tier is not None:
        raise fail(f"--tier is for client keys only; a {scope} key has no queue priority")
    chosen = tier or default_tier(settings)
    if chosen not in settings.tier_priority:
        configured = ", ".join(sorted(settings.tier_priority))
        raise fail(
            f"--tier must be a configured tier ({configured}), got {chosen!r}; tiers and their "
            'priorities are set with IMAGEFLEET_TIER_PRIORITY, e.g. {"free": 0, "paid": 10}'
        )
    db = open_database(settings)
    with db.write() as conn:
        key, token = create_key(conn, name=name, scope=scope, tier=chosen, now=now())  # type: ignore[arg-type]
    tier_note = f", tier {key.tier}" if key.scope in ("client", "deploy") else ""
    typer.echo(f"created {key.scope} key {key.id} ({key.name}{tier_note})")
    if key.scope in ("client", "deploy"):
        typer.echo(f"webhook signing secret (also at GET /v1/account): {key.webhook_secret}")
    typer.echo("the key, shown only this once; store it now:")
    typer.echo(token)


@keys_app.command("list")
def keys_list(data_dir: Path | None = DataDirOption) -> None:
    """List keys (ids, names, scopes, tiers; never secrets)."""
    from imagefleet.store.keys import list_keys

    db = open_database(settings_for(data_dir))
    with db.read() as conn:
        keys = list_keys(conn)
    print_table(
        ("id", "scope", "tier", "state", "created (UTC)", "name"),
        (
            (
                key.id,
                key.scope,
                key.tier if key.scope in ("client", "deploy") else NO_TIER,
                "revoked" if key.revoked_at else "active",
                when(key.created_at),
                key.name,
            )
            for key in keys
        ),
        empty="no keys yet; create one with `imagefleet keys create --name NAME`",
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id shown by `keys list`."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Revoke a key: it stops working at once."""
    from imagefleet.store.keys import revoke_key

    db = open_database(settings_for(data_dir))
    with db.write() as conn:
        if not revoke_key(conn, key_id, now()):
            raise fail(f"no active key with id {key_id!r} (`imagefleet keys list` shows them)")
    typer.echo(f"revoked {key_id}")


@models_app.command("add")
def models_add(
    name: str = typer.Argument(..., help="Model name clients will use."),
    source: str = typer.Argument(
        ...,
        help="A local diffusers folder or .safetensors file, an https:// URL, hf:org/name "
        "or s3://bucket/key.",
    ),
    kind: ModelKind = typer.Option(ModelKind.checkpoint, "--kind", help="What the model is."),
    base: ModelBase | None = typer.Option(
        None, "--base", help="Architecture family; detected from local files when absent."
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        help="For a single-file checkpoint: a local diffusers folder with its configs "
        "(model_index.json and each component's config), so workers need no network.",
    ),
    fetch_configs: bool = typer.Option(
        False,
        "--fetch-configs",
        help="For a single-file checkpoint without --config: let workers download its "
        "configs from Hugging Face when they load it (they need network access).",
    ),
    trigger: list[str] = typer.Option(
        [], "--trigger", help="A trigger word (embeddings, LoRAs); repeat for several."
    ),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected hash, for remote sources."),
    size_bytes: int | None = typer.Option(None, "--size-bytes", help="Size, for remote sources."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Register a model (a new version if the name exists and the content changed)."""
    settings_for(data_dir)  # says which data directory, and stops early if it has no database
    model = add_model(
        Registration(
            name=name,
            source=source,
            kind=kind,
            base=base,
            config=config,
            sha256=sha256,
            size_bytes=size_bytes,
            trigger_words=tuple(trigger),
            fetch_configs=fetch_configs,
        ),
        data_dir=data_dir,
    )
    base_text = f", {model.base.value}" if model.base else ""
    typer.echo(
        f"registered {model.kind.value} {model.name} v{model.version}{base_text} "
        f"sha256 {model.sha256} ({model.size_bytes} bytes)"
    )


def add_model(request: Registration, *, data_dir: Path | None, create: bool = False) -> Model:
    db = open_database(settings_for(data_dir, create=create, quiet=True))
    try:
        with hashing_bar(request.source) as on_bytes:
            return register(db, request, on_bytes)
    except RegistrationError as exc:
        raise fail(f"{exc.message} (--{exc.option.replace('_', '-')})") from exc


@contextlib.contextmanager
def hashing_bar(source: str, console: Console | None = None) -> Iterator[OnBytes | None]:
    """A progress bar on stderr (bytes, speed, time left) while a local model is hashed, which
    takes minutes for a multi-gigabyte checkpoint; nothing for a remote source (the CLI
    downloads nothing: workers do, and log their progress), or when stderr is no terminal."""
    path = Path(source).expanduser()
    console = console or Console(stderr=True)
    if source.startswith(REMOTE_PREFIXES) or not path.exists() or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("hashing {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(path.name, total=path_size(path))
        yield lambda size: bar.advance(task, size)


@models_app.command("list")
def models_list(data_dir: Path | None = DataDirOption) -> None:
    """List the newest version of every model."""
    from imagefleet.store.models import list_models

    db = open_database(settings_for(data_dir))
    with db.read() as conn:
        models = list_models(conn)
    print_table(
        ("name", "version", "kind", "base", "sha256", "size (bytes)", "source"),
        (
            (
                m.name,
                f"v{m.version}",
                m.kind.value,
                m.base.value if m.base else "-",
                m.sha256[:12],
                str(m.size_bytes),
                m.source,
            )
            for m in models
        ),
        empty="no models yet; `imagefleet models add NAME SOURCE` registers one",
    )


@models_app.command("create-demo")
def models_create_demo(
    data_dir: Path | None = DataDirOption,
    single_file: bool = typer.Option(
        False,
        "--single-file",
        help="Also register `demo-single`, the same weights as one .safetensors.",
    ),
) -> None:
    """Build the tiny random-weight SD 1.5-architecture model and register it as `demo`.

    Its images are noise (random weights), but it runs the real diffusers pipeline, at real
    SD 1.5 latent sizes, in seconds on a CPU, through the same registry, download and
    verification path as any model.
    """
    root = settings_for(data_dir, create=True).data_dir
    model = create_demo(root, data_dir, single_file=single_file)
    typer.echo(f"registered {model.name} v{model.version} from {model.source}")


def create_demo(root: Path, data_dir: Path | None, *, single_file: bool = False) -> Model:
    try:
        from imagefleet.demo_model import export_single_file, save_demo_model
    except ImportError as exc:
        raise fail(
            "the demo model needs the worker extra: pip install 'imagefleet[worker]'"
        ) from exc
    folder = (root / "models" / DEMO_NAME).resolve()
    if not (folder / "model_index.json").exists():
        save_demo_model(folder)
    model = add_model(Registration(DEMO_NAME, str(folder)), data_dir=data_dir, create=True)
    if single_file:
        file = folder.parent / "demo-single.safetensors"
        if not file.exists():
            export_single_file(folder, file)
        add_model(
            Registration("demo-single", str(file), config=str(folder)),
            data_dir=data_dir,
            create=True,
        )
    return model


@db_app.command("upgrade")
def db_upgrade(data_dir: Path | None = DataDirOption) -> None:
    """Apply all migrations (safe to run repeatedly); creates the database if there is none."""
    open_database(settings_for(data_dir, create=True))
    typer.echo("database schema is up to date")


@db_app.command("cleanup")
def db_cleanup(
    older_than: float | None = typer.Option(
        None, "--older-than", help="Seconds; default IMAGEFLEET_RETENTION_SECONDS (7 days)."
    ),
    batch_size: int = typer.Option(
        500, "--batch-size", min=1, help="Jobs deleted per transaction."
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Delete finished jobs (and their files) older than the retention period, in batches."""
    from imagefleet.artifacts.factory import artifact_store_for
    from imagefleet.orchestrator.retention import purge_expired

    settings = settings_for(data_dir)
    age = settings.retention_seconds if older_than is None else older_than
    if not age:
        raise fail("retention is disabled (0 seconds); pass --older-than to purge anyway")
    db = open_database(settings)
    purged = purge_expired(
        db, artifact_store_for(settings), older_than_seconds=age, now=now(), batch_size=batch_size
    )
    typer.echo(f"deleted {purged} finished jobs older than {age:.0f}s")
