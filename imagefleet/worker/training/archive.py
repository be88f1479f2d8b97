"""A checkpoint folder as one file, for the artifact store, and back.

The artifact store keeps files, not folders, so a checkpoint travels as one uncompressed zip
(its tensors do not compress) holding exactly the checkpoint's four files. Unpacking accepts
those names and nothing else, each within a size bound, so an archive from storage cannot write
outside its folder or fill the disk; what is inside is then verified by `read_checkpoint`.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from imagefleet.worker.training.checkpoint import STATE_FILE, TENSOR_FILES, CorruptCheckpoint

CHECKPOINT_FILES = (*TENSOR_FILES, STATE_FILE)
MAX_FILE_BYTES = 16 << 30


def pack_checkpoint(folder: Path, dest: Path) -> Path:
    """Writes the checkpoint in ``folder`` as the zip ``dest``; returns ``dest``."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in CHECKPOINT_FILES:
            archive.write(folder / name, arcname=name)
    return dest


def unpack_checkpoint(archive_path: Path, dest: Path) -> Path:
    """Extracts a packed checkpoint into the folder ``dest`` (replaced); returns ``dest``.

    Raises `CorruptCheckpoint` for anything but a zip of the expected files; the caller skips
    to the previous checkpoint, as for any other corrupt one.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            names = sorted(info.filename for info in archive.infolist())
            if names != sorted(CHECKPOINT_FILES):
                raise CorruptCheckpoint(
                    archive_path, f"holds {names}; expected exactly {sorted(CHECKPOINT_FILES)}"
                )
            for info in archive.infolist():
                if info.file_size > MAX_FILE_BYTES:
                    raise CorruptCheckpoint(archive_path, f"{info.filename} is too large")
                with archive.open(info) as source, (dest / info.filename).open("wb") as target:
                    shutil.copyfileobj(source, target)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptCheckpoint(archive_path, f"not a readable checkpoint archive: {exc}") from None
    return dest
