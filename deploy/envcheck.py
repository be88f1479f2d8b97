"""Which environment variables imagefleet reads, found by introspecting the code that reads them,
and a check that every variable a deployment sets is one of them, with a value it accepts.

A misspelt variable (`IMAGEFLEET_LEASE_SECOND`) is silently ignored by pydantic-settings and by
the command line, so a deployment file with one looks fine and runs with a default. The readers:

- `imagefleet.config.Settings`: every field, as `IMAGEFLEET_<FIELD>`;
- `imagefleet.artifacts.s3_config.S3Config`: every field, as `IMAGEFLEET_S3_<FIELD>`;
- every `envvar=` of every `imagefleet` command-line option (the worker's settings);
- the images' own scripts under deploy/docker/bin/ (the worker entrypoint, the warm-up);
- a short list of third-party variables that the images' libraries read (THIRD_PARTY).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "deploy" / "docker" / "bin"
PREFIX = "IMAGEFLEET_"
_SCRIPT_VARIABLE = re.compile(r"\b(IMAGEFLEET_[A-Z0-9_]+)\b")

# Variables outside imagefleet's own that the images set on purpose, and who reads them.
THIRD_PARTY = {
    "FORWARDED_ALLOW_IPS": "uvicorn (which proxies' X-Forwarded-* headers to trust)",
    "HF_HOME": "huggingface_hub (the Hub cache, kept on the models volume)",
    "HF_HUB_OFFLINE": "huggingface_hub",
    "NVIDIA_VISIBLE_DEVICES": "the NVIDIA container toolkit",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA container toolkit",
    "PATH": "the shell (the image's virtualenv first)",
    "PYTHONDONTWRITEBYTECODE": "python",
    "PYTHONUNBUFFERED": "python",
    "PIP_NO_CACHE_DIR": "pip (image builds)",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip (image builds)",
    "DEBIAN_FRONTEND": "apt (image builds)",
}


@dataclass(frozen=True)
class Reader:
    """Where a variable is read, and how its value is parsed (None: taken as text)."""

    where: str
    convert: Callable[[str], object] | None = None


@functools.cache
def readers() -> dict[str, Reader]:
    """Every IMAGEFLEET_* variable the code reads, found by introspection (once per process)."""
    from imagefleet.artifacts.s3_config import S3Config
    from imagefleet.config import Settings

    found: dict[str, Reader] = {}
    prefix = Settings.model_config.get("env_prefix", "")
    for field in Settings.model_fields:
        found[f"{prefix}{field.upper()}"] = Reader(f"imagefleet/config.py Settings.{field}")
    for field in S3Config.model_fields:
        found[f"{PREFIX}S3_{field.upper()}"] = Reader(f"S3Config.{field}")
    found.update(command_line_readers())
    for script in sorted(SCRIPTS.iterdir()):
        if script.is_file():
            for name in _SCRIPT_VARIABLE.findall(script.read_text()):
                found.setdefault(name, Reader(f"deploy/docker/bin/{script.name}"))
    return found


def command_line_readers() -> dict[str, Reader]:
    """The `envvar=` of every option of every `imagefleet` command, with the option's parser.

    Typer builds on its own copy of click, so the command tree is walked by duck typing."""
    import typer.main

    from imagefleet.cli import app

    found: dict[str, Reader] = {}

    def walk(command: Any, path: str) -> None:
        for param in command.params:
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for name in envvars:
                found[name] = Reader(f"`{path}` {param.opts[0]}", _option_parser(param))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "imagefleet")
    return found


def _option_parser(param: Any) -> Callable[[str], object]:
    """Parses a value the way the option does: typer's own coercion (its vendored click has no
    `param.type`), or click's type where a plain click option stands."""

    def convert(value: str) -> object:
        if hasattr(param, "get_runtime_param"):
            return param.get_runtime_param().coerce(value, param=param, ctx=None)
        return param.type.convert(value, param, None)

    return convert


def problems(source: str, env: Mapping[str, str], *, imagefleet_container: bool) -> list[str]:
    """What is wrong with the variables one container (or image) sets.

    In imagefleet's own containers every variable must be read by something (imagefleet, or a
    THIRD_PARTY library); in others (PostgreSQL, the proxy) only IMAGEFLEET_* ones are checked.
    Values are parsed the way their reader parses them, so `IMAGEFLEET_LEASE_SECONDS=30s`
    is caught here and not at start-up.
    """
    known = readers()
    found = []
    for name in sorted(env):
        if name in known or (name in THIRD_PARTY and imagefleet_container):
            continue
        if name.startswith(PREFIX) or imagefleet_container:
            hint = _closest(name, known)
            found.append(f"{source}: {name} is read by nothing{hint}")
    ours = {k: v for k, v in env.items() if k in known and not _interpolated(v)}
    found += [f"{source}: {message}" for message in _value_problems(ours, known)]
    return found


def _value_problems(env: Mapping[str, str], known: Mapping[str, Reader]) -> Iterator[str]:
    from pydantic import ValidationError

    from imagefleet.artifacts.s3_config import S3Config
    from imagefleet.config import Settings

    for name, value in env.items():
        convert = known[name].convert
        if convert is None:
            continue
        try:
            convert(value)
        except Exception as exc:
            yield f"{name}={value!r} is refused by {known[name].where}: {exc}"
    settings_env = {k: v for k, v in env.items() if known[k].where.startswith("imagefleet/config")}
    if settings_env:
        with mock.patch.dict(os.environ, settings_env, clear=True):
            try:
                Settings()
            except ValidationError as exc:
                for error in exc.errors():
                    field = ".".join(str(part) for part in error["loc"])
                    yield f"{PREFIX}{field.upper()}: {error['msg']}"
    try:
        S3Config.from_env(env)
    except ValueError as exc:
        yield str(exc)


def _interpolated(value: str) -> bool:
    """Compose values with ${...} are filled in at `docker compose up`; not parseable here."""
    return "${" in value


def _closest(name: str, known: Mapping[str, Reader]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f" (did you mean {match[0]}?)" if match else ""
