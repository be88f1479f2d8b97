"""Reading a dataset archive without trusting it, and the limits a dataset must keep.

Archives come from users: entry names that would escape a folder, links, encrypted entries,
declared sizes over the limits, suspicious compression ratios (zip bombs) and entries that
inflate past their declared size are refused here, while reading, before anything is decoded
(`dataset.py` then decodes and pairs what this module let through). No torch: it runs in the
control plane.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIX = ".txt"
IGNORED_PREFIXES = ("__MACOSX/",)
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# Below this size a high compression ratio is normal (captions, flat test images).
RATIO_CHECK_MIN_BYTES = 1 << 20
MAX_LISTED_PROBLEMS = 10
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class DatasetLimits:
    """Server limits on a dataset; the orchestrator's settings may tighten or widen them."""

    max_images: int = 1000
    max_entries: int = 4000
    max_image_bytes: int = 32 << 20
    max_caption_bytes: int = 64 << 10
    max_total_bytes: int = 1 << 30
    max_pixels: int = 4096 * 4096
    min_side: int = 8
    max_caption_chars: int = 2000
    max_compression_ratio: float = 200.0


DEFAULT_LIMITS = DatasetLimits()


class DatasetError(ValueError):
    """The dataset cannot be trained on; the message says what to fix.

    ``problems`` lists every per-file problem found (undecodable images, missing captions), so
    one upload reports them all rather than one per retry.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def read_entries(
    archive: zipfile.ZipFile, limits: DatasetLimits
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The archive's images and caption files by name, each read within its limit."""
    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > limits.max_entries:
        raise DatasetError(
            f"the archive holds {len(infos)} files; at most {limits.max_entries} are allowed"
        )
    images: dict[str, bytes] = {}
    captions: dict[str, bytes] = {}
    unsupported: list[str] = []
    declared_total = 0
    for info in infos:
        name = check_name(info.filename)
        _check_entry_kind(info, name)
        if _ignored(name):
            continue
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in (*IMAGE_SUFFIXES, CAPTION_SUFFIX):
            unsupported.append(name)
            continue
        if name in images or name in captions:
            raise DatasetError(f"the archive holds {name!r} twice: remove the duplicate")
        limit = limits.max_caption_bytes if suffix == CAPTION_SUFFIX else limits.max_image_bytes
        _check_declared_size(info, name, limit, limits)
        declared_total += info.file_size
        if declared_total > limits.max_total_bytes:
            raise DatasetError(
                f"the archive unpacks to more than {limits.max_total_bytes} bytes: "
                "use fewer or smaller images"
            )
        target = captions if suffix == CAPTION_SUFFIX else images
        target[name] = _read_bounded(archive, info, name, limit)
    if unsupported:
        raise DatasetError(
            f"unsupported files in the archive: {listing(unsupported)}; expected images "
            f"({', '.join(IMAGE_SUFFIXES)}) and {CAPTION_SUFFIX} captions",
            [f"{name}: unsupported file type" for name in unsupported],
        )
    return images, captions


def check_name(name: str) -> str:
    """The entry name if it stays inside the dataset folder; refuses anything that escapes."""
    if not name or len(name) > 1000 or any(ord(char) < 0x20 for char in name):
        raise DatasetError(f"invalid file name {name!r} in the dataset")
    if "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(
            f"file name {name!r} is absolute or uses backslashes: dataset paths must be "
            "relative, with forward slashes"
        )
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise DatasetError(f"file name {name!r} points outside the dataset ('..' is refused)")
    return PurePosixPath(*parts).as_posix()


def _check_entry_kind(info: zipfile.ZipInfo, name: str) -> None:
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"{name!r} is a symbolic link: datasets may hold plain files only")
    if info.flag_bits & 0x1:
        raise DatasetError(f"{name!r} is encrypted: upload an archive without a password")


def _check_declared_size(
    info: zipfile.ZipInfo, name: str, limit: int, limits: DatasetLimits
) -> None:
    if info.file_size > limit:
        raise DatasetError(too_big(name, info.file_size, limit))
    if (
        info.file_size > RATIO_CHECK_MIN_BYTES
        and info.file_size > info.compress_size * limits.max_compression_ratio
    ):
        raise DatasetError(
            f"{name!r} inflates {info.file_size} bytes from {info.compress_size}, more than "
            f"{limits.max_compression_ratio:g} times: refused as a possible zip bomb"
        )


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int) -> bytes:
    """Reads one entry, never more than ``limit`` + 1 bytes, whatever the header claims."""
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise DatasetError(
            f"{name!r} cannot be extracted ({exc}): the archive is corrupt"
        ) from None
    if len(data) > limit:
        raise DatasetError(too_big(name, len(data), limit))
    if len(data) != info.file_size:
        raise DatasetError(
            f"{name!r} unpacks to {len(data)} bytes but declares {info.file_size}: "
            "the archive is corrupt"
        )
    return data


def _ignored(name: str) -> bool:
    base = PurePosixPath(name).name
    return name.startswith(IGNORED_PREFIXES) or base in IGNORED_NAMES or base.startswith("._")


def too_big(name: str, size: int, limit: int) -> str:
    return f"{name!r} is {size} bytes; at most {limit} are allowed per file"


def listing(entries: Sequence[str]) -> str:
    shown = "; ".join(entries[:MAX_LISTED_PROBLEMS])
    more = len(entries) - MAX_LISTED_PROBLEMS
    return f"{shown}; and {more} more" if more > 0 else shown
