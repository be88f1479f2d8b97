"""The worker's disk cache of models, keyed by content hash, within a byte budget.

Layout under the cache root (shared safely by every worker process on a node)::

    <sha256>/                  a cached model: one file inside, or a diffusers folder
    .index/<sha256>.json       its record (size, last use, stored hash; see cache_index.py)
    .index/<sha256>.pending    a download in progress: the bytes it reserved
    .partial/<sha256>/         an unfinished download, resumed by the next attempt
    .locks/<sha256>.use        held shared by every job using the model (eviction needs it
                               exclusive, so a model in use is never evicted)
    .locks/<sha256>.fetch      held exclusive by the one downloader of the model; everyone else
                               who wants it waits, then finds it cached
    .locks/cache.lock          held while making room, so two processes never over-evict

A model is fetched into ``.partial``, its sha256 checked against the registry's (a mismatch
discards the download and raises the retryable VerificationError), converted if it is an allowed
pickle, recorded, and only then renamed into place, so the cache never serves a partial or
tampered model. Records persist last-use times across restarts; a model found on disk without a
record (an older cache, a crash between the two steps) is rehashed before its first use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from imagefleet.hashing import path_sha256
from imagefleet.worker.cache_entries import (
    LeaseMemo,
    check_sha,
    is_entry,
    model_path,
    rebuild_index,
    stored_bytes,
    write_last_use,
    write_last_uses,
)
from imagefleet.worker.cache_index import (
    IndexEntry,
    eviction_order,
    plan_evictions,
    read_entry,
    room_to_make,
    write_entry,
)
from imagefleet.worker.file_locks import FileLock, locked
from imagefleet.worker.model_formats import normalize
from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.source_errors import (
    CacheFullError,
    PickleRefusedError,
    SourceError,
    VerificationError,
)
from imagefleet.worker.source_http import Progress, ProgressLog, redact
from imagefleet.worker.sources import fetch

log = logging.getLogger("imagefleet.worker.cache")

__all__ = [
    "CacheFullError",
    "CacheStats",
    "CachedModel",
    "ModelCache",
    "PickleRefusedError",
    "SourceError",
    "VerificationError",
]


@dataclass(frozen=True)
class CachedModel:
    """A verified model on disk, held in use for as long as its lease lasts."""

    path: Path
    sha256: str
    fetch_seconds: float  # 0.0 when it was already cached
    downloaded: bool


@dataclass(frozen=True)
class CacheStats:
    used_bytes: int
    budget_bytes: int | None
    free_disk_bytes: int  # what the filesystem has left, minus the reserve
    room_bytes: int  # what new models may take without evicting anything
    models: int


class ModelCache:
    def __init__(
        self,
        root: Path,
        *,
        allow_private_urls: bool = False,
        settings: ModelSettings | None = None,
        budget_bytes: int | None = None,
        progress: Callable[[str], Progress] | None = None,
    ) -> None:
        """``settings`` default to the ``IMAGEFLEET_WORKER_*`` environment; ``budget_bytes``
        (else settings.cache_bytes; 0: no budget) caps the bytes the cached models take;
        ``progress(name)`` makes a download progress callback (default: one log line every few
        seconds)."""
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        settings = settings or ModelSettings()
        if allow_private_urls:
            settings = settings.model_copy(update={"allow_private_urls": True})
        self.settings = settings
        self.allow_private_urls = settings.allow_private_urls
        budget = budget_bytes if budget_bytes is not None else settings.cache_bytes
        self.budget_bytes = budget or None
        self.min_free_bytes = settings.cache_min_free_bytes
        self._progress = progress or (lambda name: ProgressLog(name, log.info))
        self._index = self.root / ".index"
        self._locks = self.root / ".locks"
        self._partial = self.root / ".partial"
        self.download_bytes_per_s: float | None = None  # measured by the last download
        # Checked file sizes, last uses not yet in the index (written by flush and at exit).
        self._memo = LeaseMemo()
        weakref.finalize(self, write_last_uses, self._index, self._memo)
        self._rebuild_index()

    def cached(self) -> list[str]:
        """sha256s of every model on disk (sent with each claim so placement can prefer us)."""
        return sorted(p.name for p in self.root.iterdir() if is_entry(p))

    def flush(self) -> None:
        """Writes the last uses this process holds only in memory to the index (LRU for the
        other processes sharing the cache, and for the next start)."""
        write_last_uses(self._index, self._memo)

    def ensure(
        self, source: str, sha256: str, size_bytes: int, *, kind: str | None = None
    ) -> tuple[Path, float]:
        """The verified local path of the model, fetching it if needed; and seconds spent.

        Nothing is held after it returns, so a budget may evict the model later: jobs that
        must keep it for their whole run use ``lease``.
        """
        with self.lease(source, sha256, size_bytes, kind=kind) as model:
            return model.path, model.fetch_seconds

    @contextmanager
    def lease(
        self, source: str, sha256: str, size_bytes: int, *, kind: str | None = None
    ) -> Iterator[CachedModel]:
        """Holds the model in use (no process evicts it) until the block ends."""
        check_sha(sha256)
        use = FileLock(self._locks / f"{sha256}.use")
        use.acquire(exclusive=False)
        try:
            model = self._materialize(source, sha256, size_bytes, kind)
            self._touch(sha256)
            yield model
        finally:
            use.release()

    def stats(self) -> CacheStats:
        entries = self._entries()
        used = sum(e.stored_bytes for e in entries) + self._pending_bytes(exclude=None)
        free = max(0, shutil.disk_usage(self.root).free - self.min_free_bytes)
        room = free if self.budget_bytes is None else min(free, self.budget_bytes - used)
        return CacheStats(
            used_bytes=used,
            budget_bytes=self.budget_bytes,
            free_disk_bytes=free,
            room_bytes=max(0, room),
            models=len(entries),
        )

    def free_bytes(self) -> int:
        """Room for new models without evicting any: what a claim reports as free disk."""
        return self.stats().room_bytes

    def evict(self, sha256: str) -> bool:
        """Removes a model unless something uses it; True if it was removed."""
        check_sha(sha256)
        if not (self.root / sha256).is_dir():
            return False
        with locked(self._locks / "cache.lock"):
            lock = FileLock(self._locks / f"{sha256}.use")
            if not lock.acquire(exclusive=True, blocking=False):
                return False
            try:
                self._remove(sha256)
            finally:
                lock.release()
        return True

    def _materialize(
        self, source: str, sha256: str, size_bytes: int, kind: str | None
    ) -> CachedModel:
        entry = self.root / sha256
        if entry.is_dir() and self._looks_intact(sha256):
            return CachedModel(model_path(entry), sha256, 0.0, downloaded=False)
        with locked(self._locks / f"{sha256}.fetch"):
            # Fetched by someone else meanwhile, or found without a record.
            if entry.is_dir() and (self._looks_intact(sha256) or self._reverify(sha256)):
                return CachedModel(model_path(entry), sha256, 0.0, downloaded=False)
            started = time.perf_counter()
            self._reserve(sha256, size_bytes)
            try:
                self._download(source, sha256, size_bytes, kind)
            finally:
                (self._index / f"{sha256}.pending").unlink(missing_ok=True)
            seconds = time.perf_counter() - started
        if seconds > 0 and size_bytes > 0:
            # Reported with each claim: the scheduler prices a download on this worker with it.
            self.download_bytes_per_s = size_bytes / seconds
        log.info("cached model %s from %s in %.1fs", sha256[:12], redact(source), seconds)
        return CachedModel(model_path(entry), sha256, seconds, downloaded=True)

    def _download(self, source: str, sha256: str, size_bytes: int, kind: str | None) -> None:
        staging = self._partial / sha256
        staging.mkdir(parents=True, exist_ok=True)
        try:
            fetched = fetch(
                source,
                staging / "model",
                max_bytes=size_bytes,
                kind=kind,
                settings=self.settings,
                progress=self._progress(f"model {sha256[:12]}"),
            )
        except (VerificationError, PickleRefusedError):
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except SourceError:
            # Only an interrupted download is worth keeping, to resume on the next attempt.
            if not _resumable(staging):
                shutil.rmtree(staging, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            actual, _ = path_sha256(fetched)
            if actual != sha256:
                raise VerificationError(
                    f"model from {redact(source)} hashes to {actual}, but the registry says "
                    f"{sha256}; the download was discarded. The source changed since it was "
                    "registered (re-add it) or was tampered with"
                )
            stored = normalize(fetched, allow_pickle=self.settings.allow_pickle)
            content_sha = sha256 if stored == fetched else path_sha256(stored)[0]
            record = IndexEntry(
                sha256=sha256,
                stored_bytes=stored_bytes(staging / "model"),
                content_sha256=content_sha,
                last_used=time.time(),
                source=redact(source),
                verified=True,
            )
            write_entry(self._index / f"{sha256}.json", record)
            (staging / "model").rename(self.root / sha256)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _reserve(self, sha256: str, size_bytes: int) -> None:
        """Makes room for size_bytes (evicting LRU models not in use) and records the claim."""
        if self.budget_bytes is not None and size_bytes > self.budget_bytes:
            raise CacheFullError(
                f"model {sha256[:12]} is {size_bytes} bytes, more than this worker's whole "
                f"cache budget of {self.budget_bytes} (IMAGEFLEET_WORKER_CACHE_BYTES)"
            )
        with locked(self._locks / "cache.lock"):
            entries = self._entries()
            pending = self._pending_bytes(exclude=sha256)
            used = sum(e.stored_bytes for e in entries) + pending
            disk = shutil.disk_usage(self.root).free - self.min_free_bytes - pending
            deficit = room_to_make(
                need=size_bytes, used=used, budget=self.budget_bytes, disk_available=disk
            )
            if deficit:
                self._evict_for(deficit, entries, keep=sha256)
            pending_path = self._index / f"{sha256}.pending"
            pending_path.parent.mkdir(parents=True, exist_ok=True)
            pending_path.write_text(json.dumps({"bytes": size_bytes, "pid": os.getpid()}))

    def _evict_for(self, deficit: int, entries: list[IndexEntry], keep: str) -> None:
        candidates = eviction_order(entries, keep={keep})
        held: dict[str, FileLock] = {}
        try:
            for entry in candidates:
                lock = FileLock(self._locks / f"{entry.sha256}.use")
                if lock.acquire(exclusive=True, blocking=False):
                    held[entry.sha256] = lock
            in_use = {e.sha256 for e in candidates} - held.keys()
            plan = plan_evictions(candidates, deficit=deficit, in_use=in_use)
            if plan is None:
                raise CacheFullError(
                    f"the model cache needs {deficit} more bytes, but the models that could be "
                    f"evicted are in use ({len(in_use)} of {len(candidates)}); retry later or "
                    "raise IMAGEFLEET_WORKER_CACHE_BYTES"
                )
            for entry in plan:
                log.info("evicting model %s (%d bytes)", entry.sha256[:12], entry.stored_bytes)
                self._remove(entry.sha256)
        finally:
            for lock in held.values():
                lock.release()

    def _remove(self, sha256: str) -> None:
        self._memo.forget(sha256)
        shutil.rmtree(self.root / sha256, ignore_errors=True)
        (self._index / f"{sha256}.json").unlink(missing_ok=True)

    def _looks_intact(self, sha256: str) -> bool:
        """A verified record whose byte count still matches what is on disk (cheap: stats;
        once checked here, one stat per file it had)."""
        known = self._memo.intact(sha256)
        if known is not None:
            return known
        record = read_entry(self._index / f"{sha256}.json")
        intact = (
            record is not None
            and record.verified
            and stored_bytes(self.root / sha256) == record.stored_bytes
        )
        if intact:
            self._memo.remember(sha256, self.root / sha256)
        return intact

    def _reverify(self, sha256: str) -> bool:
        """Rehashes an entry; keeps and records it if it matches, discards it otherwise."""
        entry = self.root / sha256
        record = read_entry(self._index / f"{sha256}.json")
        expected = record.content_sha256 if record is not None else sha256
        try:
            actual, _ = path_sha256(model_path(entry))
        except (OSError, ValueError):
            actual = ""
        if actual != expected:
            log.warning("cached model %s is damaged (hash %s); discarding", sha256[:12], actual)
            self._remove(sha256)
            return False
        base = record or IndexEntry(sha256, 0, sha256, time.time(), "", verified=True)
        write_entry(
            self._index / f"{sha256}.json",
            replace(base, stored_bytes=stored_bytes(entry), verified=True),
        )
        return True

    def _touch(self, sha256: str) -> None:
        """Records the use in memory; the index record only every few seconds (LeaseMemo)."""
        now = time.time()
        if self._memo.touch(sha256, now):
            write_last_use(self._index, sha256, now)
            self._memo.persisted(sha256, now)

    def _entries(self) -> list[IndexEntry]:
        """Every record, with this process's newer in-memory last uses."""
        entries = []
        for path in self.root.iterdir():
            if is_entry(path):
                record = read_entry(self._index / f"{path.name}.json")
                if record is not None:
                    used = self._memo.last_used(record.sha256) or record.last_used
                    entries.append(replace(record, last_used=max(used, record.last_used)))
        return entries

    def _pending_bytes(self, *, exclude: str | None) -> int:
        """Bytes reserved by downloads still running (a dead process's claim does not count)."""
        total = 0
        for path in self._index.glob("*.pending"):
            sha = path.name.removesuffix(".pending")
            if sha == exclude:
                continue
            probe = FileLock(self._locks / f"{sha}.fetch")
            if probe.acquire(exclusive=True, blocking=False):
                probe.release()
                path.unlink(missing_ok=True)  # its downloader died
                continue
            try:
                total += int(json.loads(path.read_text())["bytes"])
            except (OSError, ValueError, KeyError):
                continue
        return total

    def _rebuild_index(self) -> None:
        """Records models found without one (rehashed on first use), drops orphan records."""
        with locked(self._locks / "cache.lock"):
            rebuild_index(self.root, self._index)


def _resumable(staging: Path) -> bool:
    return any(staging.rglob("*.part"))
