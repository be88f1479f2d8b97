"""Training datasets: read, validate and normalize them before any GPU time is spent.

A dataset arrives as a zip of images with caption files (``cat.png`` + ``cat.txt``, folders
allowed) or as instance images with one instance prompt. Both become a `DatasetManifest`: the
images in a fixed order (sorted by name) with their captions, and a sha256 over that ordered
list. The orchestrator runs this at submit, so a corrupt archive, an undecodable image or a
missing caption is a 422 there, and stores the normalized zip (`to_zip`); the worker reads that
zip with the same code and checks the sha256, so both sides train on exactly the same data.

Archives are untrusted: `dataset_archive.py` reads their entries within the limits, refusing
anything that could escape a folder or inflate past them, before anything is decoded here.
This module imports no torch: it runs in the control plane.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from imagefleet.training.dataset_archive import (
    CAPTION_SUFFIX,
    DEFAULT_LIMITS,
    IMAGE_SUFFIXES,
    DatasetError,
    DatasetLimits,
    check_name,
    listing,
    read_entries,
    too_big,
)

# What Pillow must find inside, whatever the suffix says (MPO is what many cameras call JPEG).
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP"})


# Entries that archivers add by themselves and that never hold training data.
@dataclass(frozen=True)
class DatasetItem:
    """One training image and its caption. ``name`` is its path inside the dataset."""

    name: str
    data: bytes
    caption: str
    sha256: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class DatasetManifest:
    """The normalized dataset: items sorted by name, and the sha256 that identifies them."""

    items: tuple[DatasetItem, ...]
    sha256: str

    @property
    def total_bytes(self) -> int:
        return sum(len(item.data) for item in self.items)

    def describe(self) -> list[dict[str, Any]]:
        """The manifest without image bytes: what a job view or a log may show."""
        return [
            {
                "name": item.name,
                "sha256": item.sha256,
                "caption": item.caption,
                "width": item.width,
                "height": item.height,
            }
            for item in self.items
        ]


def load_zip_dataset(
    source: bytes | Path,
    *,
    instance_prompt: str | None = None,
    limits: DatasetLimits = DEFAULT_LIMITS,
) -> DatasetManifest:
    """Reads a zip of images and same-named ``.txt`` captions into a validated manifest.

    An image without a caption file takes ``instance_prompt``; without one, every image needs
    a caption. Raises `DatasetError` naming the files at fault.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DatasetError(
            f"the dataset is not a readable zip archive ({exc}): upload a .zip of images "
            "with a .txt caption file beside each"
        ) from None
    with archive:
        images, captions = read_entries(archive, limits)
    return _build_manifest(images, captions, instance_prompt, limits)


def load_instance_images(
    images: Sequence[tuple[str, bytes]],
    instance_prompt: str,
    *,
    limits: DatasetLimits = DEFAULT_LIMITS,
) -> DatasetManifest:
    """Instance images (file name, bytes) that all share ``instance_prompt`` as caption."""
    if not instance_prompt.strip():
        raise DatasetError("instance_prompt must not be empty when images have no captions")
    named: dict[str, bytes] = {}
    for name, data in images:
        clean = check_name(name)
        if clean in named:
            raise DatasetError(f"two images are named {clean!r}: give each a distinct name")
        if len(data) > limits.max_image_bytes:
            raise DatasetError(too_big(clean, len(data), limits.max_image_bytes))
        named[clean] = data
    if sum(len(data) for data in named.values()) > limits.max_total_bytes:
        raise DatasetError(f"the images exceed {limits.max_total_bytes} bytes in total")
    return _build_manifest(named, {}, instance_prompt, limits)


def to_zip(manifest: DatasetManifest) -> bytes:
    """The manifest as a canonical zip: every image with its caption file, sorted, stored.

    Loading it back gives the same manifest and sha256; the orchestrator keeps this form, so
    the worker never needs the instance prompt or the client's original archive.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in manifest.items:
            archive.writestr(_fixed_info(item.name), item.data)
            caption_name = _stem(item.name) + CAPTION_SUFFIX
            archive.writestr(_fixed_info(caption_name), item.caption.encode("utf-8"))
    return buffer.getvalue()


def manifest_sha256(items: Sequence[DatasetItem]) -> str:
    """sha256 over the ordered (name, image sha256, caption) list, as canonical JSON."""
    rows = [[item.name, item.sha256, item.caption] for item in items]
    canonical = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _build_manifest(
    images: dict[str, bytes],
    caption_files: dict[str, bytes],
    instance_prompt: str | None,
    limits: DatasetLimits,
) -> DatasetManifest:
    if not images:
        raise DatasetError(
            f"the dataset holds no images: expected {', '.join(IMAGE_SUFFIXES)} files"
        )
    if len(images) > limits.max_images:
        raise DatasetError(
            f"the dataset holds {len(images)} images; at most {limits.max_images} are allowed"
        )
    problems: list[str] = []
    captions = _parse_captions(caption_files, limits, problems)
    stems: dict[str, str] = {}
    items: list[DatasetItem] = []
    fallback = " ".join(instance_prompt.split()) if instance_prompt else None
    for name in sorted(images):
        stem = _stem(name)
        if stem in stems:
            problems.append(f"{name}: shares its caption name with {stems[stem]}; rename one")
            continue
        stems[stem] = name
        caption = captions.get(stem) or fallback
        if caption is None:
            problems.append(f"{name}: no caption ({stem}{CAPTION_SUFFIX} missing or empty)")
            continue
        decoded = _decode(name, images[name], limits)
        if isinstance(decoded, str):
            problems.append(decoded)
            continue
        width, height, image_format = decoded
        digest = hashlib.sha256(images[name]).hexdigest()
        items.append(DatasetItem(name, images[name], caption, digest, width, height, image_format))
    problems.extend(
        f"{stem}{CAPTION_SUFFIX}: caption without an image"
        for stem in captions
        if stem not in stems
    )
    if problems:
        raise DatasetError(f"the dataset has problems: {listing(problems)}", problems)
    return DatasetManifest(items=tuple(items), sha256=manifest_sha256(items))


def _parse_captions(
    files: dict[str, bytes], limits: DatasetLimits, problems: list[str]
) -> dict[str, str]:
    """Caption text by file stem, whitespace collapsed; empty captions count as missing."""
    captions: dict[str, str] = {}
    for name, data in files.items():
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            problems.append(f"{name}: not UTF-8 text")
            continue
        caption = " ".join(text.split())
        if "\x00" in caption:
            problems.append(f"{name}: contains NUL characters")
        elif len(caption) > limits.max_caption_chars:
            problems.append(f"{name}: longer than {limits.max_caption_chars} characters")
        elif caption:
            captions[_stem(name)] = caption
    return captions


def _decode(name: str, data: bytes, limits: DatasetLimits) -> tuple[int, int, str] | str:
    """(width, height, format) of a fully decodable image, or the problem with it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image_format = image.format or ""
            if image_format not in IMAGE_FORMATS:
                return f"{name}: {image_format or 'unknown'} images are not supported"
            if width * height > limits.max_pixels:
                return f"{name}: {width}x{height} is more than {limits.max_pixels} pixels"
            if min(width, height) < limits.min_side:
                return f"{name}: {width}x{height} is smaller than {limits.min_side} pixels a side"
            image.load()
    except Image.DecompressionBombError:
        return f"{name}: more than {limits.max_pixels} pixels"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{name}: not a decodable image ({exc})"
    return width, height, image_format


def _stem(name: str) -> str:
    path = PurePosixPath(name)
    return path.with_suffix("").as_posix()


def _fixed_info(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date, so the same manifest always gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


# Stands in for the instance prompt while a zip is checked at upload (the prompt comes later,
# with the job); control characters cannot appear in a caption that was collapsed from text.
_UNCAPTIONED = "\x01imagefleet-uncaptioned\x01"
DATASET_CONTENT_TYPE = "application/zip"


@dataclass(frozen=True)
class DatasetSummary:
    """What the orchestrator records of an uploaded dataset zip, checked in full at upload:
    its image count and how many images lack a caption file (a job using it must then give an
    instance_prompt)."""

    images: int
    uncaptioned: int


def summarize_zip(data: bytes, limits: DatasetLimits = DEFAULT_LIMITS) -> DatasetSummary:
    """Validates a dataset zip as `load_zip_dataset` does, before any instance prompt is known;
    raises `DatasetError` for everything but missing captions, which it counts."""
    manifest = load_zip_dataset(data, instance_prompt=_UNCAPTIONED, limits=limits)
    uncaptioned = sum(1 for item in manifest.items if item.caption == _UNCAPTIONED)
    return DatasetSummary(images=len(manifest.items), uncaptioned=uncaptioned)
