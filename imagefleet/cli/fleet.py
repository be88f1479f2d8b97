"""Running things: the orchestrator (`serve`), a worker (`worker`), and everything (`up`)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import typer

from imagefleet.cli.admin import DEMO_NAME, create_demo
from imagefleet.cli.common import (
    CLIENT_KEY_FILE,
    DEFAULT_URL,
    URL_ENV_VAR,
    WORKER_KEY_FILE,
    fail,
    now,
    warn,
)
from imagefleet.cli.datadir import (
    DataDirOption,
    found_by_default,
    open_database,
    settings_for,
)

if TYPE_CHECKING:
    from imagefleet.config import Settings
    from imagefleet.store.database import Database
    from imagefleet.store.keys import Scope

STOP_GRACE_SECONDS = 15.0
WORKER_KEY_ENV_VAR = "IMAGEFLEET_WORKER_KEY"
# A local fleet's terminal is where a newcomer reads the key and the first command: keep the
# libraries' progress bars and warnings about optional packages (torchvision) out of it.
QUIET_LIBRARIES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
TOUR_COMMAND = (
    'imagefleet submit "a lighthouse at dawn" --model demo --width 576 --height 1024 '
    "--steps 20 --wait -o out/"
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("up")(up)


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


def up(
    workers: int = typer.Option(1, "--workers", min=0, help="Local worker processes to start."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the orchestrator binds."),
    port: int = typer.Option(8000, "--port", help="Orchestrator TCP port."),
    max_workers: int | None = typer.Option(
        None,
        "--max-workers",
        min=1,
        help="Autoscale local workers with the queue, up to this many (instead of --workers): "
        "the orchestrator's control loop starts and drains them (pool 'local').",
    ),
    min_workers: int = typer.Option(0, "--min-workers", min=0, help="With --max-workers."),
    cooldown: float = typer.Option(
        120.0, "--scale-down-cooldown", min=0, help="With --max-workers: seconds before scale-in."
    ),
    idle_to_zero: float = typer.Option(
        300.0,
        "--idle-to-zero",
        min=0,
        help="With --max-workers: idle seconds before the last goes.",
    ),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Run the whole fleet on this machine: orchestrator + N workers on SQLite and local disk.

    On first start it creates the demo model and a client key. Ctrl-C stops everything.
    """
    if max_workers is not None and min_workers > max_workers:
        raise fail(f"--min-workers ({min_workers}) must not exceed --max-workers ({max_workers})")
    from imagefleet.store.models import latest_model

    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    settings = settings_for(data_dir, create=True)
    root = settings.data_dir.resolve()
    db = open_database(settings)
    with db.read() as conn:
        has_demo = latest_model(conn, DEMO_NAME) is not None
    if not has_demo:
        typer.echo("first start: building the demo model ...")
        create_demo(root, data_dir)
    client_key = _stored_key(db, root / CLIENT_KEY_FILE, "client", "local client")
    _stored_key(db, root / WORKER_KEY_FILE, "worker", "local workers")
    db.dispose()

    url = f"http://{host}:{port}"
    env = {**os.environ, "IMAGEFLEET_DATA_DIR": str(root)}
    if max_workers is not None:
        workers = 0  # the orchestrator's local provider starts them
        pools_file = root / LOCAL_POOLS_FILE
        pools_file.write_text(
            local_pool_toml(
                url,
                root,
                min_workers,
                max_workers,
                cooldown,
                idle_to_zero,
                env.get("OMP_NUM_THREADS") or _threads(max_workers),
            )
        )
        env["IMAGEFLEET_POOLS_FILE"] = str(pools_file)
    worker_env = {**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS") or _threads(workers)}
    # SIGTERM (a process manager, `kill`) stops the fleet as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    command = [sys.executable, "-m", "imagefleet"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(
            subprocess.Popen(
                [*command, "serve", "--host", host, "--port", str(port), "--no-access-log"],
                env=env,
                start_new_session=True,
            )
        )
        _wait_healthy(url, children[0])
        for _ in range(workers):
            children.append(
                subprocess.Popen(
                    [
                        *command,
                        "worker",
                        *("--url", url),
                        *("--key-file", str(root / WORKER_KEY_FILE)),
                        *("--cache-dir", str(root / "cache")),
                    ],
                    env=worker_env,
                    # Own session: a terminal's Ctrl-C reaches only `up`, which then stops the
                    # workers before the orchestrator they must hand their jobs back to.
                    start_new_session=True,
                )
            )
        typer.secho(f"\nimagefleet is up at {url} (API docs: {url}/docs)", fg="green")
        typer.echo(f"client key: {client_key}   (also in {root / CLIENT_KEY_FILE})")
        typer.echo(f"try:  {_tour_hint(url, root)}")
        if workers:
            typer.echo("(the first job waits a few seconds while the worker imports torch)")
        if max_workers is not None:
            typer.echo(
                f"workers: autoscaled {min_workers}..{max_workers} with the queue "
                "(`imagefleet pools list` with an admin key shows them)"
            )
        typer.echo("Ctrl-C stops everything.\n")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        raise fail("a fleet process exited unexpectedly; stopping the rest")
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        _stop_all(children)


LOCAL_POOLS_FILE = "pools-up.toml"


def local_pool_toml(
    url: str,
    root: Path,
    min_workers: int,
    max_workers: int,
    cooldown: float,
    idle_to_zero: float,
    threads: str,
) -> str:
    """The pools file `up --max-workers` runs with: one local pool serving every kind.

    Written through json.dumps: a JSON string, or list of strings, is valid TOML too.
    """
    import json

    from imagefleet.kinds import kind_names

    env = {"OMP_NUM_THREADS": threads, **QUIET_LIBRARIES}.items()
    args = [
        *("--url", url),
        *("--key-file", str(root / WORKER_KEY_FILE)),
        *("--cache-dir", str(root / "cache")),
    ]
    return "\n".join(
        [
            "# Written by `imagefleet up --max-workers`; rewritten at every start.",
            "[pools.local]",
            'gpu = "local"',
            "# Any: each local worker's own claims apply its real VRAM.",
            "vram_mb = 1048576",
            "price_per_hour = 0",
            f"kinds = {json.dumps(sorted(kind_names()))}",
            f"min = {min_workers}",
            f"max = {max_workers}",
            f"scale_down_cooldown_seconds = {cooldown}",
            f"idle_to_zero_seconds = {idle_to_zero}",
            "[pools.local.provider]",
            'type = "local"',
            f"args = {json.dumps(args)}",
            f"env = {{ {', '.join(f'{json.dumps(k)} = {json.dumps(v)}' for k, v in env)} }}",
            "drain_grace_seconds = 5",
            f"log_dir = {json.dumps(str(root / 'logs'))}",
            "",
        ]
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


def _tour_hint(url: str, root: Path) -> str:
    """The README's first command, with what it needs to reach this fleet from this folder."""
    hint = TOUR_COMMAND
    if url != DEFAULT_URL:
        hint += f" --url {url}"
    if found_by_default() != root:
        hint += f" --data-dir {root}"
    return hint


def _threads(workers: int) -> str:
    """torch threads per local worker: the cores, less one for the orchestrator, shared out.

    torch takes a thread per core by default; several workers (and the orchestrator) doing that
    on one machine oversubscribe it, and spinning threads that wait on each other make a CPU
    run several times slower.
    """
    cores = os.cpu_count() or 1
    return str(max(1, (cores - 1) // max(1, workers)))


def check_artifact_store(settings: Settings) -> None:
    """Exits with a clear message when the artifact store is misconfigured (bad endpoint,
    missing bucket, bad credentials), instead of failing at the first upload."""
    from imagefleet.artifacts.base import ArtifactStoreError
    from imagefleet.artifacts.factory import artifact_store_for

    try:
        artifact_store_for(settings).check()
    except (ArtifactStoreError, ValueError) as exc:
        raise fail(f"artifact store: {exc}", code=2) from exc


def _stored_key(db: Database, path: Path, scope: Scope, name: str) -> str:
    """The key kept in the data directory for `up`, created on first start (mode 0600)."""
    from imagefleet.store.keys import create_key

    if path.exists():
        return path.read_text().strip()
    with db.write() as conn:
        _, token = create_key(conn, name=name, scope=scope, tier="free", now=now())
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise fail(
                f"the orchestrator exited with code {process.returncode} (is the port in use?)"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise fail(f"the orchestrator did not answer on {url} within {timeout:.0f}s")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    """Workers first, waiting for them (they hand their jobs back to the orchestrator), then the
    orchestrator; SIGKILL for whatever does not stop in time."""
    workers, orchestrator = children[1:], children[:1]
    for group in (workers, orchestrator):
        for child in group:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in group:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
