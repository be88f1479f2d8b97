"""`imagefleet up`: the whole fleet on this machine (orchestrator + local workers on SQLite and
local disk), the first thing a newcomer runs; its output is the README's tour."""

from __future__ import annotations

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
    WORKER_KEY_FILE,
    fail,
    now,
)
from imagefleet.cli.datadir import (
    DataDirOption,
    found_by_default,
    open_database,
    settings_for,
)

if TYPE_CHECKING:
    from imagefleet.store.database import Database
    from imagefleet.store.keys import Scope

STOP_GRACE_SECONDS = 15.0
# A local fleet's terminal is where a newcomer reads the key and the first command: keep the
# libraries' progress bars and warnings about optional packages (torchvision) out of it.
QUIET_LIBRARIES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
TOUR_COMMAND = (
    'imagefleet submit "a lighthouse at dawn" --model demo --width 576 --height 1024 '
    "--steps 20 --wait -o out/"
)


LOCAL_POOLS_FILE = "pools-up.toml"


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
