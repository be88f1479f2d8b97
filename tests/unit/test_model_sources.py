"""Model sources over real transports: resumable HTTP with host-scoped auth, hf: repositories
narrowed to the files a kind needs, and pickle files refused or converted safely."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from imagefleet.hashing import path_sha256
from imagefleet.worker.model_cache import ModelCache, PickleRefusedError
from imagefleet.worker.model_formats import sniff
from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.source_hf import parse as parse_hf
from imagefleet.worker.source_http import redact
from imagefleet.worker.sources import SourceError, fetch
from tests.model_server import ModelServer, serving

TOKEN = "Bearer hub-secret-123"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    folder = tmp_path / "served"
    folder.mkdir()
    with serving(folder) as running:
        yield running


def served_file(server: ModelServer, name: str, data: bytes) -> tuple[str, str, int]:
    path = server.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest, size = path_sha256(path)
    return f"{server.url}/{name}", digest, size


def open_settings(**values: object) -> ModelSettings:
    return ModelSettings.model_validate({"allow_private_urls": True, **values})


def test_an_interrupted_download_resumes_where_it_stopped(
    tmp_path: Path, server: ModelServer
) -> None:
    url, digest, size = served_file(server, "big.safetensors", bytes(range(256)) * 40)
    server.cut_after["/big.safetensors"] = 3_000
    cache = ModelCache(tmp_path / "cache", settings=open_settings())
    with pytest.raises(SourceError, match="resumes on retry"):
        cache.ensure(url, digest, size)
    path, _ = cache.ensure(url, digest, size)
    assert path.read_bytes() == bytes(range(256)) * 40
    (_, first), (_, second) = server.requests
    assert "range" not in first and second["range"] == "bytes=3000-"
    assert second["if-range"]  # resumed only if the file is still the same


def test_a_file_changed_on_the_server_is_fetched_again_not_spliced(
    tmp_path: Path, server: ModelServer
) -> None:
    url, _, _ = served_file(server, "m.safetensors", b"a" * 5_000)
    server.cut_after["/m.safetensors"] = 2_000
    settings = open_settings()
    dest = tmp_path / "staging"
    with pytest.raises(SourceError):
        fetch(url, dest, max_bytes=10_000, settings=settings)
    _, digest, size = served_file(server, "m.safetensors", b"b" * 6_000)
    path = fetch(url, dest, max_bytes=10_000, settings=settings)
    assert path.read_bytes() == b"b" * 6_000 and path_sha256(path) == (digest, size)


def test_an_auth_header_goes_to_its_host_only_and_never_into_messages(
    tmp_path: Path, server: ModelServer
) -> None:
    url, digest, size = served_file(server, "gated.safetensors", b"g" * 1_000)
    server.require_auth["/gated.safetensors"] = TOKEN
    with pytest.raises(SourceError, match="answered 401") as refused:
        ModelCache(tmp_path / "c1", settings=open_settings()).ensure(url, digest, size)
    assert "hub-secret" not in str(refused.value)
    authed = open_settings(http_auth={"127.0.0.1": TOKEN})
    assert "hub-secret" not in repr(authed)
    path, _ = ModelCache(tmp_path / "c2", settings=authed).ensure(url, digest, size)
    assert path.read_bytes() == b"g" * 1_000
    # A redirect to another host name must not carry the token along.
    other = served_file(server, "cdn.safetensors", b"c" * 500)
    server.redirects["/page.safetensors"] = other[0].replace("127.0.0.1", "localhost")
    ModelCache(tmp_path / "c3", settings=authed).ensure(
        f"{server.url}/page.safetensors", other[1], other[2]
    )
    page, cdn = server.requests[-2:]
    assert page[1].get("authorization") == TOKEN and "authorization" not in cdn[1]


def test_query_strings_are_kept_out_of_messages() -> None:
    assert redact("https://hub.example/m.safetensors?token=s3cret") == (
        "https://hub.example/m.safetensors"
    )


def test_a_download_larger_than_registered_stops_at_the_headers(
    tmp_path: Path, server: ModelServer
) -> None:
    url, digest, _ = served_file(server, "m.safetensors", b"x" * 50_000)
    with pytest.raises(SourceError, match="50000 bytes, larger than the registered 1000"):
        ModelCache(tmp_path / "cache", settings=open_settings()).ensure(url, digest, 1_000)


def test_pickle_urls_are_refused_without_a_request(tmp_path: Path, server: ModelServer) -> None:
    url, digest, size = served_file(server, "model.ckpt", b"\x80\x04junk")
    with pytest.raises(PickleRefusedError):
        ModelCache(tmp_path / "cache", settings=open_settings()).ensure(url, digest, size)
    assert server.gets("/model.ckpt") == 0


def _pickled_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    weights = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}
    torch.save({"state_dict": weights, "epoch": 3}, str(path))
    return weights


def test_an_unnamed_download_is_judged_by_its_bytes(tmp_path: Path, server: ModelServer) -> None:
    """Hubs serve downloads from URLs without a file name (/api/download/models/<id>)."""
    safe = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(3)}, str(safe))
    url, digest, size = served_file(server, "api/download/models/1", safe.read_bytes())
    path, _ = ModelCache(tmp_path / "c1", settings=open_settings()).ensure(url, digest, size)
    assert path.name == "model.safetensors" and sniff(path) == "safetensors"
    _pickled_checkpoint(tmp_path / "p.ckpt")
    url, digest, size = served_file(
        server, "api/download/models/2", (tmp_path / "p.ckpt").read_bytes()
    )
    cache = ModelCache(tmp_path / "c2", settings=open_settings())
    with pytest.raises(PickleRefusedError, match="pickle"):
        cache.ensure(url, digest, size)
    assert cache.cached() == []


def test_an_allowed_pickle_is_read_as_plain_tensors_and_stored_as_safetensors(
    tmp_path: Path,
) -> None:
    weights = _pickled_checkpoint(tmp_path / "model.ckpt")
    digest, size = path_sha256(tmp_path / "model.ckpt")
    cache = ModelCache(tmp_path / "cache", settings=ModelSettings(allow_pickle=True))
    path, _ = cache.ensure(str(tmp_path / "model.ckpt"), digest, size)
    assert path.name == "model.safetensors" and sniff(path) == "safetensors"
    loaded = load_file(str(path))
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    # The converted entry is still found under the registry's hash after a restart.
    restarted = ModelCache(tmp_path / "cache", settings=ModelSettings(allow_pickle=True))
    assert restarted.ensure(str(tmp_path / "gone.ckpt"), digest, size) == (path, 0.0)


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_an_allowed_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _RunsCode()}, protocol=2))
    digest, size = path_sha256(evil)
    cache = ModelCache(tmp_path / "cache", settings=ModelSettings(allow_pickle=True))
    with pytest.raises(PickleRefusedError, match="weights_only"):
        cache.ensure(str(evil), digest, size)
    assert cache.cached() == []


def _hf_repo(root: Path, repo: str, commit: str, files: dict[str, bytes]) -> Path:
    base = root / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf"


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_hf_checkpoints_fetch_only_the_diffusers_folder(tmp_path: Path, offline_hub: Path) -> None:
    _hf_repo(
        offline_hub,
        "acme/sd",
        COMMIT,
        {
            "model_index.json": b"{}",
            "unet/config.json": b"{}",
            "unet/diffusion_pytorch_model.safetensors": b"u" * 100,
            "unet/diffusion_pytorch_model.fp16.safetensors": b"h" * 50,
            "safety_checker/model.safetensors": b"s" * 100,
            "v1-5-pruned.safetensors": b"single file copy" * 10,
            "v1-5-pruned.ckpt": b"pickle",
            "tokenizer/vocab.json": b"{}",
        },
    )
    path = fetch(f"hf:acme/sd@{COMMIT}", tmp_path / "out", max_bytes=10_000, kind="checkpoint")
    fetched = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert fetched == [
        "model_index.json",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]


def test_hf_adapters_are_one_file_named_or_found(tmp_path: Path, offline_hub: Path) -> None:
    _hf_repo(offline_hub, "acme/lora", COMMIT, {"pytorch_lora_weights.safetensors": b"l" * 10})
    path = fetch("hf:acme/lora", tmp_path / "a", max_bytes=100, kind="lora")
    assert path.name == "pytorch_lora_weights.safetensors"
    _hf_repo(offline_hub, "acme/many", COMMIT, {"a.safetensors": b"a", "b.safetensors": b"b"})
    with pytest.raises(SourceError, match="name one"):
        fetch("hf:acme/many", tmp_path / "b", max_bytes=100, kind="lora")
    path = fetch(f"hf:acme/many@{COMMIT}/b.safetensors", tmp_path / "c", max_bytes=100)
    assert path.read_bytes() == b"b"


def test_hf_sources_are_parsed_strictly() -> None:
    assert parse_hf("hf:org/name@v1/sub/file.safetensors").path == "sub/file.safetensors"
    assert parse_hf("hf:org/name").revision is None
    for bad in ("hf:org", "hf:org/name@", "hf:org/name/model.ckpt"):
        with pytest.raises(SourceError, match="hf:"):
            parse_hf(bad)
