"""Registering a model: one path for the CLI (`imagefleet models add`) and the admin API
(`POST /v1/admin/models`). Local sources are hashed here; remote ones are verified by each
worker against the hash given at registration. Pickle formats are refused at the door: they
run code when loaded, and a registry entry is a promise that workers may load it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from imagefleet.errors import InvalidField
from imagefleet.hashing import OnBytes, path_sha256
from imagefleet.models.inspect import PICKLE_SUFFIXES, detect_base, detect_format
from imagefleet.protocol import ModelBase, ModelKind
from imagefleet.store.database import Database
from imagefleet.store.models import Model, register_model

REMOTE_PREFIXES = ("hf:", "http://", "https://", "s3://")


@dataclass(frozen=True)
class Registration:
    """What an operator asks to register, before it is checked."""

    name: str
    source: str
    kind: ModelKind = ModelKind.checkpoint
    base: ModelBase | None = None
    config: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    trigger_words: tuple[str, ...] = field(default_factory=tuple)
    # A single-file checkpoint without `config`: workers fetch its configs from the Hub.
    fetch_configs: bool = False


class RegistrationError(ValueError):
    """The registration is refused; `option` names the CLI option / API field at fault."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message

    def as_invalid_field(self) -> InvalidField:
        return InvalidField(("body", self.option.lstrip("-").replace("-", "_")), self.message)


def register(db: Database, request: Registration, on_bytes: OnBytes | None = None) -> Model:
    """Checks, hashes (local sources; `on_bytes` hears of every chunk hashed) and records a
    new version of the model."""
    prepared = prepare(request, on_bytes)
    with db.write() as conn:
        return register_model(
            conn,
            name=prepared.name,
            kind=prepared.kind.value,
            source=prepared.source,
            sha256=prepared.sha256 or "",
            size_bytes=prepared.size_bytes or 0,
            now=time.time(),
            config_source=prepared.config,
            config_sha256=prepared.config_sha256,
            base=prepared.base.value if prepared.base else None,
            format=prepared.format,
            trigger_words=prepared.trigger_words,
        )


@dataclass(frozen=True)
class Prepared:
    name: str
    source: str
    kind: ModelKind
    base: ModelBase | None
    format: str | None
    sha256: str
    size_bytes: int
    config: str | None
    config_sha256: str | None
    trigger_words: tuple[str, ...]


def prepare(request: Registration, on_bytes: OnBytes | None = None) -> Prepared:
    """Everything but the database write: validation, hashing, base and format detection."""
    name = request.name.strip()
    if not name or len(name) > 200 or "@" in name:
        raise RegistrationError("name", "a model name is 1 to 200 characters without '@'")
    single_file = request.source.split("?")[0].lower().endswith(".safetensors")
    if (
        request.kind is ModelKind.checkpoint
        and single_file
        and not request.config
        and not request.fetch_configs
    ):
        raise RegistrationError(
            "config",
            f"{request.source} is a single-file checkpoint, which carries weights but no "
            "configs: pass --config DIR (a diffusers folder of the same architecture; its "
            "configs are enough), or --fetch-configs to let workers download them from "
            "Hugging Face",
        )
    if request.source.startswith(REMOTE_PREFIXES):
        return _prepare_remote(request, name)
    path = Path(request.source).expanduser().resolve()
    if not path.exists():
        raise RegistrationError("source", f"no file or folder at {path}")
    _refuse_pickle(path.name)
    if path.is_file() and path.suffix.lower() != ".safetensors":
        raise RegistrationError(
            "source", f"only .safetensors files or diffusers folders are accepted, got {path.name}"
        )
    sha256, size_bytes = path_sha256(path, on_bytes)
    if request.sha256 and request.sha256 != sha256:
        raise RegistrationError(
            "sha256", f"{path} hashes to {sha256}, not the expected {request.sha256}"
        )
    try:
        base = request.base or detect_base(path)
        layout = detect_format(path, request.kind.value)
    except ValueError as exc:
        raise RegistrationError("source", str(exc)) from exc
    config, config_sha = _config(request.config)
    return Prepared(
        name,
        str(path),
        request.kind,
        base,
        layout,
        sha256,
        size_bytes,
        config,
        config_sha,
        request.trigger_words,
    )


def _prepare_remote(request: Registration, name: str) -> Prepared:
    if not (request.sha256 and request.size_bytes):
        raise RegistrationError(
            "sha256",
            "remote sources need --sha256 and --size-bytes (the worker verifies downloads "
            "against them); compute them on a machine that has the file",
        )
    if request.source.startswith(("http://", "https://", "s3://")):
        _refuse_pickle(Path(urlparse(request.source).path).name)
    config, config_sha = _config(request.config)
    return Prepared(
        name,
        request.source,
        request.kind,
        request.base,
        None,
        request.sha256,
        request.size_bytes,
        config,
        config_sha,
        request.trigger_words,
    )


def _refuse_pickle(filename: str) -> None:
    if filename.lower().endswith(PICKLE_SUFFIXES):
        raise RegistrationError(
            "source",
            f"{filename} is a pickle file, which runs code when it is loaded; convert it to "
            ".safetensors (e.g. with the `safetensors` convert script) and register that",
        )


def _config(config: str | None) -> tuple[str | None, str | None]:
    if not config:
        return None, None
    path = Path(config).expanduser().resolve()
    if not (path / "model_index.json").is_file():
        raise RegistrationError(
            "config", f"--config must be a diffusers folder with a model_index.json: {path}"
        )
    sha, _ = path_sha256(path)
    return str(path), sha
