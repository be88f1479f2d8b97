"""Pipelines and components kept resident on the device within a byte budget, LRU beyond it.

Loading a checkpoint from disk takes seconds to minutes; a worker that keeps the models its
recent jobs used on the GPU (or in RAM on a CPU worker) serves the next job with the same models
at once, and the orchestrator, told what is resident, sends it such jobs. Residents are
pipelines (a checkpoint, a refiner) and components (a VAE, a ControlNet), each under a key
(``checkpoint:<sha256>``...). A resident in use by a job is never unloaded; a resident is used
by one job at a time, since jobs change it (LoRAs, embeddings, a swapped VAE) for their run.

Sizes are measured, not guessed: the bytes of every parameter and buffer, shared tensors
counted once. Before a load, room is made for the size on disk; after it, for the real size.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("imagefleet.worker.pool")
T = TypeVar("T")
CUDA_SHARE = 0.85
RAM_SHARE = 0.5


@dataclass
class Resident(Generic[T]):
    key: str
    value: T
    bytes: int
    load_seconds: float  # what loading it cost (0.0 when it was already resident)
    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


class ResidentPool:
    """LRU of resident pipelines and components under one byte budget."""

    def __init__(
        self, budget_bytes: int, *, on_evict: Callable[[str, Any], None] | None = None
    ) -> None:
        self.budget_bytes = budget_bytes
        self._on_evict = on_evict
        self._entries: OrderedDict[str, Resident[Any]] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def use(
        self, key: str, load: Callable[[], T], *, expected_bytes: int = 0
    ) -> Iterator[Resident[T]]:
        """Yields the resident for key, loading it (and unloading LRU residents) if needed.

        The resident is held exclusively for the block: another job wanting it waits.
        """
        entry = self._acquire(key, load, expected_bytes)
        with entry.lock:
            try:
                yield entry
            finally:
                with self._lock:
                    entry.users -= 1
                entry.load_seconds = 0.0

    def resident(self) -> list[str]:
        """Keys now resident, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.bytes for e in self._entries.values())

    def evict(self, key: str) -> bool:
        """Unloads one resident unless a job uses it; True if it was unloaded."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.users:
                return False
            self._drop(key)
        _free_memory()
        return True

    def clear(self) -> None:
        with self._lock:
            for key in [k for k, e in self._entries.items() if not e.users]:
                self._drop(key)
        _free_memory()

    def _acquire(self, key: str, load: Callable[[], Any], expected_bytes: int) -> Resident[Any]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
                self._entries.move_to_end(key)
                return entry
            freed = self._make_room(expected_bytes)
        if freed:
            _free_memory()
        started = time.perf_counter()
        value = load()
        seconds = time.perf_counter() - started
        size = resident_bytes(value)
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:  # loaded meanwhile by another thread: keep theirs
                existing.users += 1
                return existing
            entry = Resident(key=key, value=value, bytes=size, load_seconds=seconds, users=1)
            self._entries[key] = entry
            freed = self._make_room(0)
        if freed:
            _free_memory()
        log.info("loaded %s (%.1f MB) in %.2fs", key, size / 1e6, seconds)
        return entry

    def _make_room(self, incoming: int) -> bool:
        """Unloads LRU residents not in use until used + incoming fits. Caller holds the lock."""
        used = sum(e.bytes for e in self._entries.values())
        dropped = False
        for key in list(self._entries):
            if used + incoming <= self.budget_bytes:
                break
            entry = self._entries[key]
            if entry.users:
                continue
            used -= entry.bytes
            self._drop(key)
            dropped = True
        if used + incoming > self.budget_bytes:
            log.warning(
                "resident models take %.1f MB, over the %.1f MB budget: every one is in use",
                (used + incoming) / 1e6,
                self.budget_bytes / 1e6,
            )
        return dropped

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        log.info("unloaded %s (%.1f MB)", key, entry.bytes / 1e6)
        if self._on_evict is not None:
            self._on_evict(key, entry.value)


def resident_bytes(value: Any) -> int:
    """Bytes of the parameters and buffers of a module or of a pipeline's modules."""
    from torch import nn

    modules: list[nn.Module]
    if isinstance(value, nn.Module):
        modules = [value]
    else:
        components = getattr(value, "components", {})
        modules = [m for m in components.values() if isinstance(m, nn.Module)]
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            identity = (tensor.untyped_storage().data_ptr(), tensor.device.index or 0)
            if identity in seen:
                continue
            seen.add(identity)
            total += tensor.untyped_storage().nbytes()
    return total


def default_budget(device: str) -> int:
    """85% of the GPU's memory on CUDA; half the machine's RAM otherwise."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return int(torch.cuda.get_device_properties(index).total_memory * CUDA_SHARE)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * RAM_SHARE)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
