"""Operator commands that act on the database directly: keys, models, migrations."""

from __future__ import annotations

from pathlib import Path

import typer

from imagefleet.cli.common import DataDirOption, fail, now, open_database, settings_for
from imagefleet.models.registry import Registration, RegistrationError, register
from imagefleet.protocol import ModelBase, ModelKind
from imagefleet.store.keys import SCOPES, create_key, list_keys, revoke_key
from imagefleet.store.models import Model, list_models

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Register models in the registry.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
DEMO_NAME = "demo"


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="A label for the key, e.g. the team using it."),
    scope: str = typer.Option("client", "--scope", help=f"One of: {', '.join(SCOPES)}."),
    tier: str = typer.Option("free", "--tier", help="Client priority tier (e.g. free, paid)."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    if scope not in SCOPES:
        raise fail(f"--scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    db = open_database(settings_for(data_dir))
    with db.write() as conn:
        key, token = create_key(conn, name=name, scope=scope, tier=tier, now=now())
    typer.echo(f"created {key.scope} key {key.id} ({key.name}, tier {key.tier})")
    typer.echo(f"webhook signing secret (also at GET /v1/account): {key.webhook_secret}")
    typer.echo("the key, shown only this once; store it now:")
    typer.echo(token)


@keys_app.command("list")
def keys_list(data_dir: Path | None = DataDirOption) -> None:
    """List keys (ids, names, scopes; never secrets)."""
    db = open_database(settings_for(data_dir))
    with db.read() as conn:
        for key in list_keys(conn):
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.id}  {key.scope:<7} {key.tier:<8} {state:<8} {key.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id shown by `keys list`."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Revoke a key: it stops working at once."""
    db = open_database(settings_for(data_dir))
    with db.write() as conn:
        if not revoke_key(conn, key_id, now()):
            raise fail(f"no active key with id {key_id!r}")
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
        help="For a single-file checkpoint: a local diffusers folder with its configs.",
    ),
    trigger: list[str] = typer.Option(
        [], "--trigger", help="A trigger word (embeddings, LoRAs); repeat for several."
    ),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected hash, for remote sources."),
    size_bytes: int | None = typer.Option(None, "--size-bytes", help="Size, for remote sources."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Register a model (a new version if the name exists and the content changed)."""
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
        ),
        data_dir=data_dir,
    )
    base_text = f", {model.base.value}" if model.base else ""
    typer.echo(
        f"registered {model.kind.value} {model.name} v{model.version}{base_text} "
        f"sha256 {model.sha256} ({model.size_bytes} bytes)"
    )


def add_model(request: Registration, *, data_dir: Path | None) -> Model:
    db = open_database(settings_for(data_dir))
    try:
        return register(db, request)
    except RegistrationError as exc:
        raise fail(f"{exc.message} (--{exc.option.replace('_', '-')})") from exc


@models_app.command("list")
def models_list(data_dir: Path | None = DataDirOption) -> None:
    """List the newest version of every model."""
    db = open_database(settings_for(data_dir))
    with db.read() as conn:
        for model in list_models(conn):
            typer.echo(
                f"{model.name}  v{model.version}  {model.sha256[:12]}  "
                f"{model.size_bytes:>12}  {model.source}"
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

    Its images are noise-like (random weights) but it runs the real diffusers pipeline in about a
    second on a CPU, through the same registry, download and verification path as any model.
    """
    model = create_demo(settings_for(data_dir).data_dir, data_dir, single_file=single_file)
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
    model = add_model(Registration(DEMO_NAME, str(folder)), data_dir=data_dir)
    if single_file:
        file = folder.parent / "demo-single.safetensors"
        if not file.exists():
            export_single_file(folder, file)
        add_model(Registration("demo-single", str(file), config=str(folder)), data_dir=data_dir)
    return model


@db_app.command("upgrade")
def db_upgrade(data_dir: Path | None = DataDirOption) -> None:
    """Apply all migrations (safe to run repeatedly)."""
    settings = settings_for(data_dir)
    open_database(settings)
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
