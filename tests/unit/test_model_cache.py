"""Models reach the worker through their source, and only verified content is ever loaded."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefleet.hashing import path_sha256
from imagefleet.worker.model_cache import ModelCache, VerificationError
from imagefleet.worker.sources import SourceError, check_public_host


def make_folder(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights" * 100)
    return root


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


def test_content_that_does_not_match_the_registry_is_refused_and_not_cached(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(VerificationError, match="registry says"):
        cache.ensure(str(folder), "0" * 64, 10_000)
    assert cache.cached() == [] and not any((tmp_path / "cache").iterdir())


def test_a_missing_source_is_a_clear_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        ModelCache(tmp_path / "cache").ensure(str(tmp_path / "nope"), "0" * 64, 1)


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
        cache.ensure(f"{base}/m.ckpt", "2" * 64, 10)


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
