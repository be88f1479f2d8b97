"""A warm lease is cheap (no folder walk, no index rewrite) and still catches a damaged entry;
last uses kept in memory order this process's evictions and reach the index when flushed."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet.hashing import path_sha256
from imagefleet.worker import cache_entries
from imagefleet.worker.cache_index import read_entry
from imagefleet.worker.model_cache import ModelCache


def make_folder(path: Path, sizes: dict[str, int]) -> tuple[str, str, int]:
    """A diffusers-like model folder; returns (source, sha256, size)."""
    for name, size in sizes.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(name.encode()[:1] * size)
    digest, total = path_sha256(path)
    return str(path), digest, total


def make_file(path: Path, size: int, fill: bytes) -> tuple[str, str, int]:
    path.write_bytes(fill * size)
    digest, total = path_sha256(path)
    return str(path), digest, total


FOLDER = {"model_index.json": 100, "unet/config.json": 50, "unet/w.safetensors": 4_000}


def test_a_warm_lease_neither_walks_the_folder_nor_rewrites_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_folder(tmp_path / "model", FOLDER)
    cache = ModelCache(tmp_path / "cache")
    cache.ensure(*model)
    cache.ensure(*model)  # checked in full once, remembered
    record = tmp_path / "cache" / ".index" / f"{model[1]}.json"
    before = record.stat()

    def no_walk(path: Path) -> list[Path]:
        raise AssertionError(f"walked {path}")

    monkeypatch.setattr(cache_entries, "model_files", no_walk)
    with cache.lease(*model) as leased:
        assert (leased.path / "unet" / "w.safetensors").exists()
    after = record.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_of_a_warm_folder_that_changed_size_is_discarded_and_fetched_again(
    tmp_path: Path,
) -> None:
    model = make_folder(tmp_path / "model", FOLDER)
    cache = ModelCache(tmp_path / "cache")
    path, _ = cache.ensure(*model)
    cache.ensure(*model)
    (path / "unet" / "w.safetensors").write_bytes(b"truncated")
    again, seconds = cache.ensure(*model)
    assert (again / "unet" / "w.safetensors").stat().st_size == 4_000 and seconds > 0


def test_last_uses_in_memory_order_evictions_here_and_reach_the_index_on_flush(
    tmp_path: Path,
) -> None:
    a, b, c = (make_file(tmp_path / f"{n}.safetensors", 10_000, n.encode()) for n in "abc")
    first = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    first.ensure(*a)
    first.ensure(*b)
    first.ensure(*a)  # a is now the most recently used, in memory
    index = tmp_path / "cache" / ".index"

    def stored(model: tuple[str, str, int]) -> float:
        entry = read_entry(index / f"{model[1]}.json")
        assert entry is not None
        return entry.last_used

    assert stored(a) < stored(b)  # not written yet: within persist_every of its last write
    first.flush()
    assert stored(a) > stored(b)
    other = ModelCache(tmp_path / "cache", budget_bytes=25_000)  # another process's view
    other.ensure(*c)  # b is the least recently used on disk too
    assert other.cached() == sorted([a[1], c[1]])
