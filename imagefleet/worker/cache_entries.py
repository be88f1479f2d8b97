"""Cached entries on disk, and what this process already knows about them.

A warm lease (the model cached and checked before) is on every job's path, so it must cost
little: the disk cache used to walk the entry's folder to sum its file sizes and to rewrite the
entry's index record for LRU on every lease, about 1 ms of CPU and 3 ms of wall time for an SD
1.5 folder here, and far more on a loaded machine or a slow disk. ``LeaseMemo`` keeps instead:

- the files (and their sizes) an entry had when this process last checked it in full, so the
  next check is one ``stat`` per file, no folder walk: a truncated or deleted file still fails
  it (a file added to a cached folder afterwards goes unnoticed, as with any trusted index);
- each entry's last use in memory; the index record is rewritten only when its stored time is
  ``persist_every`` seconds old, and every pending time is written by ``ModelCache.flush`` (at
  worker exit). This process's own evictions read the in-memory times, so its LRU order is
  exact; another process sharing the cache sees them at most ``persist_every`` late, and a
  crash loses at most that much LRU precision. Neither can evict a model in use (that is the
  use lock's job, untouched here).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from imagefleet.hashing import model_files
from imagefleet.worker.cache_index import IndexEntry, read_entry, write_entry

SHA_LENGTH = 64
PERSIST_EVERY_SECONDS = 30.0


def check_sha(sha256: str) -> None:
    if len(sha256) != SHA_LENGTH or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"{sha256!r} is not a lowercase hex sha256")


def is_entry(path: Path) -> bool:
    return path.is_dir() and len(path.name) == SHA_LENGTH and not path.name.startswith(".")


def stored_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in model_files(path)) if path.is_dir() else 0


def model_path(entry: Path) -> Path:
    """A single-file model is the one file in its entry; a folder model is the entry."""
    children = list(entry.iterdir())
    if len(children) == 1 and children[0].is_file():
        return children[0]
    return entry


class LeaseMemo:
    """Per-process knowledge of cache entries: checked file sizes and unpersisted last uses."""

    def __init__(self, persist_every: float = PERSIST_EVERY_SECONDS) -> None:
        self.persist_every = persist_every
        self._files: dict[str, tuple[tuple[str, int], ...]] = {}
        self._last_used: dict[str, float] = {}
        self._persisted: dict[str, float] = {}  # the last use the index record holds

    def remember(self, sha256: str, entry: Path) -> None:
        """Records the entry's files and sizes, right after a full check passed."""
        files = model_files(entry) if entry.is_dir() else [entry]
        self._files[sha256] = tuple((str(f), f.stat().st_size) for f in files)

    def intact(self, sha256: str) -> bool | None:
        """None when never checked in full here; else whether every file is still there with
        its size (a False is forgotten, so the next check is a full one)."""
        files = self._files.get(sha256)
        if files is None:
            return None
        try:
            if all(os.stat(path).st_size == size for path, size in files):
                return True
        except OSError:
            pass
        self.forget(sha256)
        return False

    def forget(self, sha256: str) -> None:
        self._files.pop(sha256, None)
        self._last_used.pop(sha256, None)
        self._persisted.pop(sha256, None)

    def touch(self, sha256: str, now: float) -> bool:
        """Records a use; True when the index record is due to be rewritten (then call
        ``persisted``)."""
        self._last_used[sha256] = now
        return now - self._persisted.get(sha256, float("-inf")) >= self.persist_every

    def persisted(self, sha256: str, last_used: float) -> None:
        self._persisted[sha256] = last_used

    def last_used(self, sha256: str) -> float | None:
        return self._last_used.get(sha256)

    def pending(self) -> dict[str, float]:
        """Last uses newer than what the index holds (a copy taken at once: jobs on other
        threads may lease meanwhile)."""
        return {
            sha: used
            for sha, used in list(self._last_used.items())
            if used > self._persisted.get(sha, float("-inf"))
        }


def write_last_use(index: Path, sha256: str, last_used: float) -> None:
    """Rewrites the entry's record with a later last use (none is written for a gone entry)."""
    path = index / f"{sha256}.json"
    record = read_entry(path)
    if record is not None and record.last_used < last_used:
        write_entry(path, replace(record, last_used=last_used))


def write_last_uses(index: Path, memo: LeaseMemo) -> None:
    """Every last use the memo holds that the index does not."""
    for sha256, last_used in memo.pending().items():
        try:
            write_last_use(index, sha256, last_used)
        except OSError:  # the cache folder is gone (a test's temporary one): nothing to keep
            continue
        memo.persisted(sha256, last_used)


def rebuild_index(root: Path, index: Path) -> None:
    """Records entries found without one (unverified: rehashed on first use), drops orphan
    records and staging left by the cache's earlier layout. Call with the cache lock held."""
    index.mkdir(exist_ok=True)
    for path in root.iterdir():
        if path.name.startswith(".fetch-"):
            shutil.rmtree(path, ignore_errors=True)
        elif is_entry(path) and read_entry(index / f"{path.name}.json") is None:
            write_entry(
                index / f"{path.name}.json",
                IndexEntry(
                    sha256=path.name,
                    stored_bytes=stored_bytes(path),
                    content_sha256=path.name,
                    last_used=path.stat().st_mtime,
                    source="",
                    verified=False,
                ),
            )
    for record in index.glob("*.json"):
        if not (root / record.stem).is_dir():
            record.unlink(missing_ok=True)
