"""Fetching a model from its source into a staging folder: local paths, HTTP(S) URLs and
Hugging Face repositories (`hf:org/name`). Verification and caching are the cache's job.

Untrusted sources are handled defensively: downloads are capped at the size the registry
recorded, and URLs that resolve to private or loopback addresses are refused unless the
operator allowed them (a worker on someone's LAN must not become a proxy into it).
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from urllib.parse import urlparse

import httpx

from imagefleet import netguard

HF_PREFIX = "hf:"
# Only weights and configs are fetched from the hub: never pickles or code.
HF_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model"]


class SourceError(RuntimeError):
    """The model could not be fetched from its source (retryable on another node or later)."""


def fetch(source: str, dest: Path, *, max_bytes: int, allow_private: bool = False) -> Path:
    """Materializes `source` under `dest` (which must not exist) and returns the model's path:
    `dest` itself for a folder, or a file inside it."""
    if source.startswith(HF_PREFIX):
        return _fetch_hf(source[len(HF_PREFIX) :], dest)
    if source.startswith(("http://", "https://")):
        return _fetch_url(source, dest, max_bytes=max_bytes, allow_private=allow_private)
    local = Path(source[len("file://") :] if source.startswith("file://") else source)
    return _copy_local(local, dest)


def _copy_local(path: Path, dest: Path) -> Path:
    if path.is_dir():
        shutil.copytree(path, dest, symlinks=False)
        return dest
    if path.is_file():
        dest.mkdir(parents=True)
        target = dest / path.name
        shutil.copyfile(path, target)
        return target
    raise SourceError(f"model source {path} does not exist on this worker")


def _fetch_url(url: str, dest: Path, *, max_bytes: int, allow_private: bool) -> Path:
    parsed = urlparse(url)
    if not allow_private:
        check_public_host(parsed.hostname or "")
    name = Path(parsed.path).name or "model.safetensors"
    if not name.endswith(".safetensors"):
        raise SourceError(f"only .safetensors files are downloaded, not {name!r} ({url})")
    dest.mkdir(parents=True)
    target = dest / name
    received = 0
    try:
        # Redirects are not followed blindly: each hop could point at a private address.
        with httpx.stream("GET", url, follow_redirects=False, timeout=60) as response:
            if response.status_code != 200:
                raise SourceError(f"GET {url} answered {response.status_code}")
            with target.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
                    if received > max_bytes:
                        raise SourceError(f"{url} is larger than the registered {max_bytes} bytes")
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        raise SourceError(f"download of {url} failed: {exc}") from exc
    return target


def check_public_host(host: str) -> None:
    """Raises SourceError when the host resolves to a private, loopback or link-local address."""
    try:
        netguard.check_public_host(host, "set IMAGEFLEET_WORKER_ALLOW_PRIVATE_URLS=1 to allow it")
    except netguard.PrivateAddressError as exc:
        raise SourceError(str(exc)) from exc


def _fetch_hf(repo: str, dest: Path) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # the worker extra installs it
        raise SourceError(
            "hf: sources need huggingface_hub (pip install imagefleet[worker])"
        ) from exc
    try:
        # Through the Hub's own cache, so a repository fetched once (or pre-seeded on an
        # air-gapped machine, with HF_HUB_OFFLINE=1) is not fetched again.
        snapshot = Path(snapshot_download(repo_id=repo, allow_patterns=HF_PATTERNS))
    except Exception as exc:
        raise SourceError(f"download of hf:{repo} failed: {exc}") from exc
    copied = 0
    for file in sorted(snapshot.rglob("*")):
        if file.is_file() and any(fnmatch.fnmatch(file.name, p) for p in HF_PATTERNS):
            target = dest / file.relative_to(snapshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)  # follows the cache's symlinks to the blobs
            copied += 1
    if not copied:
        raise SourceError(f"hf:{repo} has no safetensors, json or txt files")
    return dest
