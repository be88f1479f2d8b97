"""Models reach the worker through their source, only verified content is ever loaded, and the
disk cache stays within its budget without evicting a model in use."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefleet.hashing import path_sha256
from imagefleet.worker.cache_index import (
    IndexEntry,
    eviction_order,
    plan_evictions,
    room_to_make,
)
from imagefleet.worker.model_cache import (
    CacheFullError,
    ModelCache,
    PickleRefusedError,
    VerificationError,
)
from imagefleet.worker.sources import SourceError, check_public_host


def make_folder(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights" * 100)
    return root


def make_file(path: Path, size: int, fill: bytes = b"w") -> tuple[str, str, int]:
    """A model file of `size` bytes; returns (source, sha256, size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((fill * size)[:size])
    digest, total = path_sha256(path)
    return str(path), digest, total


def no_partial_data(cache_root: Path) -> bool:
    partial = cache_root / ".partial"
    return not partial.exists() or not any(partial.iterdir())


def test_a_folder_hash_covers_names_and_contents_but_not_order_or_junk(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    digest, size = path_sha256(folder)
    (folder / ".gitattributes").write_text("junk")
    assert path_sha256(folder) == (digest, size)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        b"weights" * 99 + b"x" * 7
    )
    assert path_sha256(folder)[0] != digest


def test_a_local_folder_is_copied_verified_and_then_served_from_cache(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    digest, size = path_sha256(folder)
    cache = ModelCache(tmp_path / "cache")
    path, _ = cache.ensure(str(folder), digest, size)
    assert path == tmp_path.resolve() / "cache" / digest and (path / "model_index.json").exists()
    assert cache.cached() == [digest]
    folder.rename(tmp_path / "gone")  # a cached model needs no source any more
    assert cache.ensure(str(folder), digest, size) == (path, 0.0)


def test_a_single_file_model_resolves_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"abc" * 10)
    digest, size = path_sha256(file)
    path, _ = ModelCache(tmp_path / "cache").ensure(str(file), digest, size)
    assert path.name == "model.safetensors" and path.read_bytes() == file.read_bytes()


def test_content_that_does_not_match_the_registry_is_refused_discarded_and_retryable(
    tmp_path: Path,
) -> None:
    folder = make_folder(tmp_path / "m")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(VerificationError, match="registry says") as caught:
        cache.ensure(str(folder), "0" * 64, 10_000)
    assert caught.value.retryable
    assert cache.cached() == [] and no_partial_data(cache.root)
    assert cache.stats().used_bytes == 0


def test_a_missing_source_is_a_clear_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        ModelCache(tmp_path / "cache").ensure(str(tmp_path / "nope"), "0" * 64, 1)


def test_a_pickle_file_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    source, digest, size = make_file(tmp_path / "model.ckpt", 100)
    with pytest.raises(PickleRefusedError, match="can run code") as caught:
        ModelCache(tmp_path / "cache").ensure(source, digest, size)
    assert not caught.value.retryable


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_urls_are_downloaded_verified_and_size_limited(
    tmp_path: Path, file_server: tuple[str, Path]
) -> None:
    base, served = file_server
    (served / "m.safetensors").write_bytes(b"w" * 5000)
    digest, size = path_sha256(served / "m.safetensors")
    cache = ModelCache(tmp_path / "cache", allow_private_urls=True)
    path, _ = cache.ensure(f"{base}/m.safetensors", digest, size)
    assert path.read_bytes() == b"w" * 5000
    with pytest.raises(SourceError, match="larger than"):
        ModelCache(tmp_path / "c2", allow_private_urls=True).ensure(
            f"{base}/m.safetensors", "1" * 64, 100
        )
    with pytest.raises(SourceError, match=r"only \.safetensors"):
        cache.ensure(f"{base}/m.onnx", "2" * 64, 10)


def test_urls_to_private_addresses_are_refused_unless_allowed(
    tmp_path: Path, file_server: tuple[str, Path]
) -> None:
    base, _ = file_server
    with pytest.raises(SourceError, match="non-public address"):
        ModelCache(tmp_path / "cache").ensure(f"{base}/m.safetensors", "0" * 64, 10)
    with pytest.raises(SourceError, match="non-public"):
        check_public_host("10.1.2.3")


def test_hf_sources_go_through_huggingface_hub_and_are_verified_like_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No network here: a Hugging Face cache laid out on disk stands in for the Hub, and the
    real snapshot_download resolves the repository from it (HF_HUB_OFFLINE=1)."""
    snapshot = tmp_path / "hf" / "models--acme--tiny-sd" / "snapshots" / "0123abcd"
    make_folder(snapshot)
    (snapshot / "unet" / "model.ckpt").write_bytes(b"a pickle we must never fetch")
    refs = tmp_path / "hf" / "models--acme--tiny-sd" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    expected = tmp_path / "expected"
    make_folder(expected)
    digest, size = path_sha256(expected)
    path, _ = ModelCache(tmp_path / "cache").ensure("hf:acme/tiny-sd", digest, size)
    assert (path / "model_index.json").exists()
    assert not (path / "unet" / "model.ckpt").exists()  # only weights and configs come over
    with pytest.raises(SourceError, match="hf:acme/missing"):
        ModelCache(tmp_path / "c2").ensure("hf:acme/missing", digest, size)


def test_the_least_recently_used_model_is_evicted_to_fit_the_budget(tmp_path: Path) -> None:
    a, b, c = (make_file(tmp_path / f"{n}.safetensors", 10_000, n.encode()) for n in "abc")
    cache = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    cache.ensure(*a)
    cache.ensure(*b)
    cache.ensure(*a)  # a is now the most recently used
    cache.ensure(*c)
    assert cache.cached() == sorted([a[1], c[1]])
    assert cache.stats().used_bytes == 20_000


def test_a_model_in_use_is_never_evicted_and_a_full_cache_says_so(tmp_path: Path) -> None:
    a, b, c = (make_file(tmp_path / f"{n}.safetensors", 10_000, n.encode()) for n in "abc")
    cache = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    with cache.lease(*a) as leased:
        cache.ensure(*b)
        cache.ensure(*c)  # a is the oldest, but in use: b goes
        assert cache.cached() == sorted([a[1], c[1]]) and leased.path.exists()
        with cache.lease(*c), pytest.raises(CacheFullError, match="in use") as caught:
            cache.ensure(*b)
        assert caught.value.retryable
        assert cache.cached() == sorted([a[1], c[1]])
    assert not cache.evict("f" * 64)  # not cached
    assert cache.evict(a[1]) and cache.cached() == [c[1]]


def test_a_model_larger_than_the_whole_budget_is_refused_without_evicting(tmp_path: Path) -> None:
    small = make_file(tmp_path / "s.safetensors", 1_000)
    big = make_file(tmp_path / "b.safetensors", 30_000)
    cache = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    cache.ensure(*small)
    with pytest.raises(CacheFullError, match="whole cache budget"):
        cache.ensure(*big)
    assert cache.cached() == [small[1]]


def test_a_restarted_cache_keeps_its_models_and_their_last_use(tmp_path: Path) -> None:
    a, b, c = (make_file(tmp_path / f"{n}.safetensors", 10_000, n.encode()) for n in "abc")
    first = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    first.ensure(*a)
    first.ensure(*b)
    first.ensure(*a)
    restarted = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    assert restarted.cached() == sorted([a[1], b[1]])
    assert restarted.ensure(*b)[1] == 0.0  # served from disk, no fetch
    restarted.ensure(*a)
    restarted.ensure(*c)  # b was used before a's last use: b goes
    assert restarted.cached() == sorted([a[1], c[1]])


def test_a_model_found_without_a_record_is_rehashed_before_use(tmp_path: Path) -> None:
    """A cache written by an older worker (no index) is adopted; a damaged entry is re-fetched."""
    source, digest, size = make_file(tmp_path / "m.safetensors", 4_000)
    entry = tmp_path / "cache" / digest
    entry.mkdir(parents=True)
    (entry / "m.safetensors").write_bytes(b"x" * 4_000)  # same size, wrong content
    cache = ModelCache(tmp_path / "cache")
    assert cache.cached() == [digest]
    path, seconds = cache.ensure(source, digest, size)
    assert path.read_bytes() == b"w" * 4_000 and seconds > 0  # discarded and fetched again


def test_a_cached_file_whose_size_changed_is_discarded_and_fetched_again(tmp_path: Path) -> None:
    source, digest, size = make_file(tmp_path / "m.safetensors", 4_000)
    cache = ModelCache(tmp_path / "cache")
    path, _ = cache.ensure(source, digest, size)
    path.write_bytes(b"truncated")
    again, _ = cache.ensure(source, digest, size)
    assert again.read_bytes() == b"w" * 4_000


def test_stats_report_usage_and_room_for_claims(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", budget_bytes=25_000)
    cache.ensure(*make_file(tmp_path / "a.safetensors", 10_000))
    stats = cache.stats()
    assert (stats.used_bytes, stats.models, stats.budget_bytes) == (10_000, 1, 25_000)
    assert cache.free_bytes() == stats.room_bytes == min(15_000, stats.free_disk_bytes)


def test_hashes_that_are_not_sha256_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a lowercase hex sha256"):
        ModelCache(tmp_path / "cache").ensure("x", "../etc", 1)


def _entry(sha: str, size: int, used: float) -> IndexEntry:
    return IndexEntry(sha, size, sha, used, "", verified=True)


def test_room_to_make_counts_the_budget_and_the_disk() -> None:
    assert room_to_make(need=10, used=80, budget=100, disk_available=1_000) == 0
    assert room_to_make(need=30, used=80, budget=100, disk_available=1_000) == 10
    assert room_to_make(need=30, used=0, budget=None, disk_available=20) == 10


def test_eviction_takes_the_least_recently_used_first_and_skips_models_in_use() -> None:
    now = time.time()
    entries = [_entry("a", 10, now - 30), _entry("b", 10, now - 20), _entry("c", 10, now - 10)]
    order = eviction_order(entries, keep={"c"})
    assert [e.sha256 for e in order] == ["a", "b"]
    assert [e.sha256 for e in plan_evictions(order, deficit=5, in_use=set()) or []] == ["a"]
    assert [e.sha256 for e in plan_evictions(order, deficit=5, in_use={"a"}) or []] == ["b"]
    assert plan_evictions(order, deficit=15, in_use={"a"}) is None


def test_the_budget_and_policy_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFLEET_WORKER_CACHE_BYTES", "25000")
    monkeypatch.setenv("IMAGEFLEET_WORKER_ALLOW_PICKLE", "1")
    monkeypatch.setenv("IMAGEFLEET_WORKER_HTTP_AUTH", '{"hub.example": "Bearer s3cret"}')
    cache = ModelCache(tmp_path / "cache")
    assert cache.budget_bytes == 25_000 and cache.settings.allow_pickle
    assert "s3cret" not in repr(cache.settings)
    assert cache.settings.http_auth["hub.example"].get_secret_value() == "Bearer s3cret"
