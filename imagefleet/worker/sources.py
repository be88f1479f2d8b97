"""Fetching a model from its source into a staging folder: local paths, HTTP(S) URLs, Hugging
Face repositories (``hf:org/name[@revision][/file]``) and S3 objects (``s3://bucket/key``).
Verification and caching are the cache's job.

Untrusted sources are handled defensively: downloads are capped at the size the registry
recorded, URLs that resolve to private or loopback addresses are refused unless the operator
allowed them (a worker on someone's LAN must not become a proxy into it), and pickle files are
refused by name unless the operator allowed them (their content is checked again after the
download, see model_formats.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from imagefleet.worker import source_hf, source_s3
from imagefleet.worker.model_formats import PICKLE_SUFFIXES, UNNAMED
from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.source_errors import (
    CacheFullError,
    PickleRefusedError,
    SourceError,
    VerificationError,
    check_public_host,
)
from imagefleet.worker.source_http import HttpOptions, Progress, ProgressLog, download, redact

HF_PREFIX = source_hf.PREFIX

__all__ = [
    "CacheFullError",
    "PickleRefusedError",
    "Progress",
    "ProgressLog",
    "SourceError",
    "VerificationError",
    "check_public_host",
    "fetch",
    "redact",
]


def fetch(
    source: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool = False,
    kind: str | None = None,
    settings: ModelSettings | None = None,
    progress: Progress | None = None,
) -> Path:
    """Materializes ``source`` under ``dest`` and returns the model's path: ``dest`` itself
    for a folder, or a file inside it.

    ``dest`` must not exist, or hold what an interrupted fetch of the same source left there
    (an https or s3 download then resumes). ``kind`` (checkpoint, lora, vae, embedding,
    controlnet) narrows which files of a repository or S3 folder are fetched. ``settings``
    default to the ``IMAGEFLEET_WORKER_*`` environment.
    """
    settings = settings or ModelSettings()
    allow_private = allow_private or settings.allow_private_urls
    if source.startswith(HF_PREFIX):
        return source_hf.fetch_hf(
            source, dest, kind=kind, max_bytes=max_bytes, token=settings.hf_token
        )
    if source.startswith(source_s3.PREFIX):
        return source_s3.fetch_s3(
            source,
            dest,
            kind=kind,
            max_bytes=max_bytes,
            settings=settings,
            check_name=lambda name: check_file_name(name, settings.allow_pickle),
            progress=progress,
        )
    if source.startswith(("http://", "https://")):
        name = unquote(Path(urlparse(source).path).name) or UNNAMED
        if "." not in name:
            name = UNNAMED
        else:
            check_file_name(name, settings.allow_pickle)
        dest.mkdir(parents=True, exist_ok=True)
        options = HttpOptions(allow_private=allow_private, auth=settings.http_auth)
        return download(
            source, dest / name, max_bytes=max_bytes, options=options, progress=progress
        )
    local = Path(source[len("file://") :] if source.startswith("file://") else source)
    return _copy_local(local, dest, allow_pickle=settings.allow_pickle)


def check_file_name(name: str, allow_pickle: bool) -> None:
    """Refuses names of files the worker will not load: pickles (unless allowed) and others."""
    suffix = Path(name).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise PickleRefusedError(
                f"{name} is a pickle file, which can run code when loaded; this worker refuses "
                "them (register a .safetensors file, or set IMAGEFLEET_WORKER_ALLOW_PICKLE=1 "
                "to load it with torch.load(weights_only=True) and convert it)"
            )
        return
    if suffix not in (".safetensors", ".json"):
        raise SourceError(f"only .safetensors files are downloaded, not {name!r}")


def _copy_local(path: Path, dest: Path, *, allow_pickle: bool) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    if path.is_dir():
        shutil.copytree(path, dest, symlinks=False)
        return dest
    if path.is_file():
        check_file_name(path.name, allow_pickle)
        dest.mkdir(parents=True)
        target = dest / path.name
        shutil.copyfile(path, target)
        return target
    raise SourceError(f"model source {path} does not exist on this worker")
