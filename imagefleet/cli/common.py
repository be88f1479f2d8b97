"""Small things every command group shares: exits with a message, notes, names and options."""

from __future__ import annotations

import time

import typer

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV_VAR = "IMAGEFLEET_URL"
CLIENT_KEY_FILE = "client.key"
WORKER_KEY_FILE = "worker.key"

UrlOption = typer.Option(DEFAULT_URL, "--url", envvar=URL_ENV_VAR, help="Orchestrator base URL.")


def now() -> float:
    return time.time()


def fail(message: str, code: int = 1) -> typer.Exit:
    """An exit with one red line on stderr; raise what it returns."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg="yellow", err=True)


def note(message: str) -> None:
    """Context a person wants (which data directory, which URL) on stderr, out of the way of
    output that scripts read."""
    typer.secho(message, dim=True, err=True)
