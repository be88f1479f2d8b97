"""Deployment packages as deterministic tar.gz archives, and reading them back safely.

`pack` sorts names, zeroes times, owners and the gzip header's mtime and keeps only two file
modes, so the same directory content always gives the same bytes and thus the same sha256:
that hash is the version id, and re-deploying identical content finds the existing version.

`package_files` is the one reader, used by the orchestrator (to validate at deploy, without
running anything) and by the worker (to extract): it refuses absolute paths, `..`, links,
devices and anything but regular files and directories, and stops at size limits before
decompressing everything, so an archive cannot write outside its directory or fill a disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

MAX_PACKAGE_BYTES = 20 << 20  # compressed: what a deploy may upload (IMAGEFLEET_MAX_PACKAGE_BYTES)
MAX_UNPACKED_BYTES = 100 << 20  # what its files may add up to once extracted
MAX_FILES = 2000
SKIPPED = frozenset({"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"})


class PackageInvalid(ValueError):
    """The archive or directory cannot be a deployment package; the message says why."""


def pack(directory: Path) -> bytes:
    """The directory as a deterministic tar.gz (caches and VCS folders left out). A symlink is
    refused rather than followed: what it points to would not be part of the version."""
    root = Path(directory)
    if not root.is_dir():
        raise PackageInvalid(f"{root} is not a directory")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as zipped:
        _write_tar(root, zipped)
    return buffer.getvalue()


def _write_tar(root: Path, stream: gzip.GzipFile) -> None:
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in _walk(root):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
                continue
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            archive.addfile(info, io.BytesIO(data))


def _walk(root: Path) -> list[Path]:
    """Every path under `root`, depth first in name order (the archive's order)."""
    found: list[Path] = []
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.name in SKIPPED:
            continue
        if path.is_symlink():
            raise PackageInvalid(
                f"{path} is a symlink; packages hold regular files only (copy the target in)"
            )
        found.append(path)
        if path.is_dir():
            found.extend(_walk(path))
    return found


def package_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_name(name: str) -> str:
    """The member's path if it stays inside the package; PackageInvalid otherwise."""
    if not name or "\\" in name or "\x00" in name:
        raise PackageInvalid(f"the archive has an unsafe entry name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise PackageInvalid(f"the archive has an absolute path {name!r}; paths must be relative")
    parts = [part for part in path.parts if part not in ("", ".")]
    if not parts or ".." in parts:
        raise PackageInvalid(f"the archive entry {name!r} escapes the package (path traversal)")
    if ":" in parts[0]:
        raise PackageInvalid(f"the archive entry {name!r} looks like a drive path")
    return "/".join(parts)


def package_files(
    data: bytes,
    *,
    max_bytes: int = MAX_PACKAGE_BYTES,
    max_unpacked: int = MAX_UNPACKED_BYTES,
) -> dict[str, bytes]:
    """Every regular file of the archive by its relative path; PackageInvalid for an oversize,
    corrupt or unsafe archive (links, devices, absolute or escaping paths)."""
    if len(data) > max_bytes:
        raise PackageInvalid(
            f"the package is {len(data)} bytes; the limit is {max_bytes} "
            "(keep weights out of it: register them as models)"
        )
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_FILES:
                    raise PackageInvalid(f"the package has more than {MAX_FILES} entries")
                name = safe_name(member.name)
                if member.issym() or member.islnk():
                    raise PackageInvalid(
                        f"the archive entry {name!r} is a link; packages hold regular files only"
                    )
                if member.isdir():
                    continue
                if not member.isfile():
                    raise PackageInvalid(f"the archive entry {name!r} is not a regular file")
                total += member.size
                if total > max_unpacked:
                    raise PackageInvalid(
                        f"the package unpacks to more than {max_unpacked} bytes (the limit)"
                    )
                handle = archive.extractfile(member)
                assert handle is not None
                files[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise PackageInvalid(f"the package is not a readable tar.gz archive: {exc}") from exc
    return files


def extract(data: bytes, destination: Path) -> None:
    """Writes the package's files under `destination` (which must not exist yet), checked as
    `package_files` checks them, so nothing lands outside it."""
    files = package_files(data)
    destination.mkdir(parents=True)
    root = destination.resolve()
    for name, content in sorted(files.items()):
        target = (root / name).resolve()
        if root not in target.parents:
            raise PackageInvalid(f"the archive entry {name!r} escapes the package")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
