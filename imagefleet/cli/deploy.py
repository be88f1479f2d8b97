"""`imagefleet deploy DIR` and `imagefleet deployments list|show|promote|rollback|run`.
Translation only: packing is imagefleet/deployments/package.py, the calls are
imagefleet/deployments/client.py, the rules are the orchestrator's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from imagefleet.cli.common import UrlOption, fail
from imagefleet.cli.connection import KeyOption, connect, talking_to
from imagefleet.cli.datadir import DataDirOption
from imagefleet.client import ApiError
from imagefleet.deployments import PackageInvalid, load_manifest, pack, package_files
from imagefleet.deployments.client import Deployments
from imagefleet.deployments.protocol import AliasView, DeploymentView

deployments_app = typer.Typer(
    help="Versioned deployments: list, show, promote and roll back aliases, run.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.add_typer(deployments_app, name="deployments")


@contextmanager
def _session(url: str, key: str | None, data_dir: Path | None) -> Iterator[Deployments]:
    with talking_to(url), connect(url, key, data_dir) as client:
        try:
            yield Deployments(client)
        except ApiError as exc:
            if exc.status == 403:  # the server's message names the scope needed
                raise fail(str(exc.detail)) from exc
            raise


def _aliases(aliases: list[AliasView]) -> str:
    return ", ".join(f"{a.alias} -> v{a.number}" for a in aliases) or "none"


def deploy(
    directory: Path = typer.Argument(
        ..., help="The package: a manifest and pipeline.py or graph.json."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Deployment name. Default: the manifest's name, else the directory's."
    ),
    alias: str | None = typer.Option(None, "--alias", help="Also point this alias (e.g. staging)."),
    public: bool | None = typer.Option(
        None, "--public/--private", help="Let any client run it (default: private, unchanged)."
    ),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Pack DIRECTORY (deterministically: same content, same version) and deploy it."""
    try:
        data = pack(directory)
        manifest = load_manifest(package_files(data))
    except PackageInvalid as exc:
        raise fail(f"{directory}: {exc}") from exc
    chosen = name or manifest.name or directory.resolve().name.lower()
    with _session(url, key, data_dir) as api:
        result = api.deploy(data, chosen, alias=alias, public=public)
    version = result.version
    state = "new version" if result.created else "unchanged: identical content"
    typer.echo(
        f"deployed {result.name} v{version.number} ({state}), version {version.version}\n"
        f"aliases: {_aliases(result.aliases)}"
    )


@deployments_app.command("list")
def deployments_list(
    url: str = UrlOption, key: str | None = KeyOption, data_dir: Path | None = DataDirOption
) -> None:
    """Your deployments and the public ones."""
    with _session(url, key, data_dir) as api:
        found = api.list()
    if not found:
        typer.echo("no deployments; make one with `imagefleet deploy DIR --name NAME`")
    for item in found:
        visibility = "public" if item.public else "private"
        owner = "" if item.owned else ", not yours"
        typer.echo(
            f"{item.name}  {len(item.versions)} versions  {visibility}{owner}  "
            f"aliases: {_aliases(item.aliases)}"
        )


@deployments_app.command("show")
def deployments_show(
    name: str = typer.Argument(...),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """A deployment's versions and aliases."""
    with _session(url, key, data_dir) as api:
        _print(api.show(name))


@deployments_app.command("promote")
def deployments_promote(
    name: str = typer.Argument(...),
    alias: str = typer.Argument(..., help="e.g. production"),
    version: str = typer.Argument(..., help="A number (v2), a sha256 or its first 8+ characters."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Point ALIAS at VERSION (runs that name the alias use it from now on)."""
    with _session(url, key, data_dir) as api:
        _print(api.promote(name, alias, version))


@deployments_app.command("rollback")
def deployments_rollback(
    name: str = typer.Argument(...),
    alias: str = typer.Argument("production"),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Point ALIAS back at the version it pointed at before."""
    with _session(url, key, data_dir) as api:
        _print(api.rollback(name, alias))


@deployments_app.command("run")
def deployments_run(
    name: str = typer.Argument(...),
    inputs: str = typer.Option("{}", "--inputs", help='JSON object, e.g. \'{"prompt": "a cat"}\'.'),
    alias: str | None = typer.Option(None, "--alias"),
    version: str | None = typer.Option(None, "--version"),
    out: Path | None = typer.Option(None, "-o", "--out", help="Wait, then save outputs here."),
    url: str = UrlOption,
    key: str | None = KeyOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Run a deployment (production, else latest, unless --alias or --version)."""
    try:
        values = json.loads(inputs)
    except json.JSONDecodeError as exc:
        raise fail(f"--inputs is not JSON: {exc}") from exc
    with _session(url, key, data_dir) as api:
        job = api.run(name, values, version=version, alias=alias)
        typer.echo(f"job {job.id} ({job.kind}) {job.status.value}")
        if out is None:
            return
        done = api.client.wait(job.id)
        if done.error is not None:
            raise fail(f"job {job.id} {done.status.value}: {done.error.message}")
        out.mkdir(parents=True, exist_ok=True)
        for output in done.outputs:
            extension = output.content_type.rpartition("/")[2].replace("plain", "txt")
            path = out / f"{job.id}-{output.index}.{extension}"
            path.write_bytes(api.client.download(job.id, output.index))
            typer.echo(str(path))


def _print(view: DeploymentView) -> None:
    typer.echo(f"{view.name} ({'public' if view.public else 'private'})")
    pointed: dict[str, list[str]] = {}
    for alias in view.aliases:
        pointed.setdefault(alias.version, []).append(alias.alias)
    for version in view.versions:
        tags = ", ".join(pointed.get(version.version, []))
        typer.echo(
            f"  v{version.number}  {version.version[:12]}  {version.type}  "
            f"{version.size_bytes} bytes" + (f"  <- {tags}" if tags else "")
        )
