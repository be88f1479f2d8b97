"""The disk cache's index: one small JSON record per cached model, and the eviction decision.

The index lives on disk next to the models (``.index/<sha256>.json``), so it survives a worker
restart and is shared by every worker process using the cache directory: it records when each
model was last used (for LRU), how many bytes it takes, what its stored content hashes to (a
converted pickle no longer hashes to the registry's sha256) and whether it was verified. A
record is replaced atomically (temp file + rename), so a reader never sees half of one.

Choosing what to evict is a pure function of the records, the bytes needed and what is in use,
tested without a filesystem.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class IndexEntry:
    sha256: str  # the registry's hash of the model as its source serves it: the cache key
    stored_bytes: int
    content_sha256: str  # hash of what is stored (equal to sha256 unless converted)
    last_used: float  # wall-clock seconds, comparable across processes and restarts
    source: str  # redacted: no query strings or credentials
    verified: bool  # False for models found on disk without a record (rehashed on first use)


def read_entry(path: Path) -> IndexEntry | None:
    try:
        data = json.loads(path.read_text())
        return IndexEntry(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_entry(path: Path, entry: IndexEntry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(entry), handle)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def room_to_make(*, need: int, used: int, budget: int | None, disk_available: int) -> int:
    """Bytes that must be evicted before ``need`` more bytes fit (0 when they already fit).

    ``disk_available`` is what the filesystem can still take (free space minus the reserve and
    minus what running downloads will still write); ``budget`` None means no byte budget.
    """
    over_budget = 0 if budget is None else used + need - budget
    over_disk = need - disk_available
    return max(0, over_budget, over_disk)


def eviction_order(entries: Iterable[IndexEntry], *, keep: set[str]) -> list[IndexEntry]:
    """Least recently used first, never one in ``keep`` (the model being fetched)."""
    return sorted(
        (e for e in entries if e.sha256 not in keep), key=lambda e: (e.last_used, e.sha256)
    )


def plan_evictions(
    candidates: Sequence[IndexEntry], *, deficit: int, in_use: set[str]
) -> list[IndexEntry] | None:
    """The shortest LRU prefix of evictable candidates freeing ``deficit`` bytes, or None
    when even evicting every model not in use would not free enough."""
    chosen: list[IndexEntry] = []
    freed = 0
    for entry in candidates:
        if freed >= deficit:
            break
        if entry.sha256 in in_use:
            continue
        chosen.append(entry)
        freed += entry.stored_bytes
    return chosen if freed >= deficit else None
