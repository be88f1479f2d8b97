"""Running things: the orchestrator (`serve`) and a worker (`worker`); `up` (everything on this
machine) lives in `up.py`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from imagefleet.cli import up as up_command
from imagefleet.cli.common import (
    DEFAULT_URL,
    URL_ENV_VAR,
    fail,
    warn,
)
from imagefleet.cli.datadir import (
    DataDirOption,
    open_database,
    settings_for,
)

if TYPE_CHECKING:
    from imagefleet.config import Settings

WORKER_KEY_ENV_VAR = "IMAGEFLEET_WORKER_KEY"
# httpx (the worker, the client) drops an idle connection after 5 s, uvicorn's default too: a
# request sent just as the server closes the connection fails with "Server disconnected without
# sending a response". A server that keeps idle connections longer than its clients never races
# them (load balancers use the same rule).
KEEP_ALIVE_SECONDS = 75


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("up")(up_command.up)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    processes: int = typer.Option(
        1, "--processes", min=1, help="Server processes (uvicorn workers)."
    ),
    access_log: bool = typer.Option(
        True, "--access-log/--no-access-log", help="Log every request (uvicorn's access log)."
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Run the orchestrator API (settings from IMAGEFLEET_* variables; see docs/operations.md)."""
    import uvicorn

    settings = settings_for(data_dir, create=True)
    if settings.migrate_on_start:
        open_database(settings).dispose()  # migrate once, before several processes start
    else:
        check_schema(settings)
    check_artifact_store(settings)
    uvicorn.run(
        "imagefleet.orchestrator.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level="info",
        access_log=access_log,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def worker(
    url: str = typer.Option(
        DEFAULT_URL, "--url", envvar=URL_ENV_VAR, help="Orchestrator base URL."
    ),
    orchestrator: str | None = typer.Option(
        None, "--orchestrator", hidden=True, help="Deprecated name of --url."
    ),
    key_file: Path | None = typer.Option(
        None,
        "--key-file",
        envvar="IMAGEFLEET_WORKER_KEY_FILE",
        help=f"A file holding the worker-scope API key (preferred, with ${WORKER_KEY_ENV_VAR}).",
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        help=f"A worker-scope API key. Prefer --key-file or ${WORKER_KEY_ENV_VAR}: a key on "
        "the command line is visible to every user of this machine (ps).",
    ),
    cache_dir: Path = typer.Option(
        Path.home() / ".cache" / "imagefleet" / "models",
        "--cache-dir",
        envvar="IMAGEFLEET_WORKER_CACHE_DIR",
        help="Where models are cached on disk.",
    ),
    device: str | None = typer.Option(
        None,
        "--device",
        envvar="IMAGEFLEET_WORKER_DEVICE",
        help="torch device; default cuda if present, else cpu.",
    ),
    engine: str = typer.Option(
        "diffusers",
        "--engine",
        envvar="IMAGEFLEET_WORKER_ENGINE",
        help="What generates the images: 'diffusers' (the real models), or "
        "'module.path:ClassName' to plug in another engine class, built as ClassName(device); "
        "tests use this to run the fleet without inference. That module is imported, so its "
        "code runs in this worker: name only code you trust. Jobs can never choose it.",
    ),
    handlers: str = typer.Option(
        "",
        "--handlers",
        envvar="IMAGEFLEET_WORKER_HANDLERS",
        help="Comma-separated modules with extra job-kind handlers (each exposes HANDLER); "
        "imported, so name only code you trust.",
    ),
    max_pixels: int = typer.Option(
        1536 * 1536,
        "--max-pixels",
        envvar="IMAGEFLEET_WORKER_MAX_PIXELS",
        help="Largest width*height this worker takes.",
    ),
    node_id: str | None = typer.Option(
        None, "--node-id", envvar="IMAGEFLEET_NODE_ID", help="Machine id."
    ),
    allow_private_urls: bool = typer.Option(
        False,
        "--allow-private-urls",
        envvar="IMAGEFLEET_WORKER_ALLOW_PRIVATE_URLS",
        help="Allow model URLs that resolve to private or loopback addresses.",
    ),
    max_jobs: int | None = typer.Option(
        None,
        "--max-jobs",
        envvar="IMAGEFLEET_WORKER_MAX_JOBS",
        help="Exit after this many attempts (any outcome).",
    ),
    claim_wait: float = typer.Option(
        20.0,
        "--claim-wait",
        envvar="IMAGEFLEET_WORKER_CLAIM_WAIT",
        help="Long-poll seconds per claim.",
    ),
    pool: str | None = typer.Option(
        None,
        "--pool",
        envvar="IMAGEFLEET_POOL",
        help="The autoscaling pool this worker belongs to (its price and scaling); the "
        "providers set it for the workers they start.",
    ),
    shutdown_grace: float = typer.Option(
        0.0,
        "--shutdown-grace",
        envvar="IMAGEFLEET_WORKER_SHUTDOWN_GRACE",
        help="On SIGTERM/Ctrl-C, seconds the running job may take to finish before it is "
        "handed back (0: hand it back at once). A second signal exits immediately.",
    ),
    max_batch: int = typer.Option(
        1,
        "--max-batch",
        envvar="IMAGEFLEET_WORKER_MAX_BATCH",
        min=1,
        max=8,
        help="Micro-batching: claim up to this many compatible txt2img jobs (same models, "
        "size, steps, sampler) and run them as one pipeline call (1: off; worth it on GPUs).",
    ),
    preview_every: int = typer.Option(
        0,
        "--preview-every",
        min=0,
        envvar="IMAGEFLEET_PREVIEW_EVERY",
        help="Send a <= 64 px JPEG preview of a generation every N denoising steps, for the "
        "dashboard (0: none).",
    ),
    training_tracking: str | None = typer.Option(
        None,
        "--training-tracking",
        envvar="IMAGEFLEET_TRAINING_TRACKING",
        help="Track each train_lora attempt: 'jsonl:PATH' or 'mlflow:TRACKING_URI' "
        "(docs/training.md).",
    ),
) -> None:
    """Pull jobs from an orchestrator and run them on this machine's GPU (or CPU)."""
    from imagefleet.worker.loop import Worker, WorkerConfig
    from imagefleet.worker.orchestrator_client import Unauthorized

    if orchestrator is not None:
        warn("--orchestrator is deprecated and will be removed; use --url")
        url = orchestrator
    token = _worker_key(key, key_file)
    if pool is not None:
        import re

        from imagefleet.scaling.pools import NAME_PATTERN

        if not re.match(NAME_PATTERN, pool):
            raise fail(
                f"--pool {pool!r} is not a pool name (lower-case letters, digits, - and _, "
                "as in the pools file)"
            )
    if training_tracking:  # read by the train_lora handler (worker/handlers/train_lora.py)
        os.environ["IMAGEFLEET_TRAINING_TRACKING"] = training_tracking
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = WorkerConfig(
        orchestrator_url=url,
        key=token,
        cache_dir=cache_dir,
        device=device,
        engine=engine,
        max_pixels=max_pixels,
        claim_wait_seconds=claim_wait,
        allow_private_urls=allow_private_urls,
        shutdown_grace_seconds=shutdown_grace,
        handler_plugins=handlers,
        pool=pool,
        max_batch=max_batch,
        preview_every=preview_every,
    )
    if node_id:
        config.node_id = node_id
    try:
        runner = Worker(config)
    except ImportError as exc:
        raise fail(
            f"a worker needs the worker extra (pip install 'imagefleet[worker]'): {exc}"
        ) from exc
    runner.install_signal_handlers()
    try:
        runner.run(max_jobs=max_jobs)
    except Unauthorized as exc:
        raise fail(str(exc), code=3) from exc


def _worker_key(key: str | None, key_file: Path | None) -> str:
    """The worker key from --key-file, --key (with a warning) or the environment."""
    if key and key_file:
        raise fail("pass the worker key once: --key-file or --key, not both")
    if key_file is not None:
        try:
            token = key_file.expanduser().read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read --key-file {key_file}: {exc.strerror or exc}") from exc
        if not token:
            raise fail(f"--key-file {key_file} is empty")
        return token
    if key:
        warn(
            "a key on the command line is visible to every user of this machine (ps); "
            f"use --key-file FILE or ${WORKER_KEY_ENV_VAR} instead"
        )
        return key
    if token := os.environ.get(WORKER_KEY_ENV_VAR, "").strip():
        return token
    raise fail(
        f"no worker key: pass --key-file FILE or set ${WORKER_KEY_ENV_VAR} "
        "(`imagefleet keys create --name workers --scope worker` makes one)"
    )


def check_schema(settings: Settings) -> None:
    """Exits with code 2 when the database is unreachable or its schema is not current."""
    from imagefleet.store.database import Database, DatabaseUnavailable, SchemaNotCurrent

    db = Database(settings.database_url)
    try:
        db.check_schema()
    except (DatabaseUnavailable, SchemaNotCurrent) as exc:
        raise fail(str(exc), code=2) from exc
    finally:
        db.dispose()


def check_artifact_store(settings: Settings) -> None:
    """Exits with a clear message when the artifact store is misconfigured (bad endpoint,
    missing bucket, bad credentials), instead of failing at the first upload."""
    from imagefleet.artifacts.base import ArtifactStoreError
    from imagefleet.artifacts.factory import artifact_store_for

    try:
        artifact_store_for(settings).check()
    except (ArtifactStoreError, ValueError) as exc:
        raise fail(f"artifact store: {exc}", code=2) from exc
