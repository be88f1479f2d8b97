"""Content hashes for model files and folders, computed the same way by the registry (when a
model is added) and by the worker (before it loads what it fetched).

A folder's hash covers every file's relative path and content, so a renamed or swapped file
changes it; files are read in sorted order so the hash does not depend on the filesystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20
# Files that tools drop next to models and that never affect what is loaded.
IGNORED_NAMES = frozenset({".DS_Store", ".gitattributes"})
IGNORED_DIRS = frozenset({".cache", ".git", ".huggingface"})


# Called with the size of each chunk read, so a caller can show a progress bar while a
# multi-gigabyte checkpoint is hashed (`imagefleet models add`).
OnBytes = Callable[[int], None]


def file_sha256(path: Path, on_bytes: OnBytes | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def model_files(path: Path) -> list[Path]:
    """The files that make up a model folder, sorted by relative path."""
    return sorted(
        (
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.name not in IGNORED_NAMES
            and not IGNORED_DIRS.intersection(p.relative_to(path).parts)
        ),
        key=lambda p: p.relative_to(path).as_posix(),
    )


def path_sha256(path: Path, on_bytes: OnBytes | None = None) -> tuple[str, int]:
    """(sha256, total bytes) of a file, or of a folder through a manifest of its files."""
    if path.is_file():
        return file_sha256(path, on_bytes), path.stat().st_size
    if not path.is_dir():
        raise FileNotFoundError(f"no file or folder at {path}")
    manifest = hashlib.sha256()
    total = 0
    for file in model_files(path):
        relative = file.relative_to(path).as_posix()
        manifest.update(f"{relative}\0{file_sha256(file, on_bytes)}\n".encode())
        total += file.stat().st_size
    if total == 0:
        raise ValueError(f"model folder {path} holds no files")
    return manifest.hexdigest(), total


def path_size(path: Path) -> int:
    """The bytes `path_sha256` reads: a file's size, or a folder's model files together."""
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in model_files(path)) if path.is_dir() else 0
