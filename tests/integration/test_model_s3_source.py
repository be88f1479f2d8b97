"""s3:// model sources against a real SeaweedFS: one object, a folder model, bad credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet.hashing import path_sha256
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.sources import SourceError
from tests.seaweed import SeaweedS3


def s3_settings(seaweed: SeaweedS3, secret: str | None = None) -> ModelSettings:
    return ModelSettings.model_validate(
        {
            "s3_endpoint_url": seaweed.endpoint_url,
            "s3_region": seaweed.region,
            "s3_access_key_id": seaweed.access_key,
            "s3_secret_access_key": secret or seaweed.secret_key,
        }
    )


def test_s3_objects_and_folders_are_fetched_with_the_worker_credentials(
    tmp_path: Path, seaweed: SeaweedS3
) -> None:
    bucket = seaweed.create_bucket()
    client = seaweed.client()
    client.put_object(Bucket=bucket, Key="loras/style.safetensors", Body=b"l" * 3_000)
    folder = {
        "model_index.json": b"{}",
        "unet/config.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": b"u" * 2_000,
        "unet/diffusion_pytorch_model.bin": b"a pickle, never fetched",
    }
    for name, data in folder.items():
        client.put_object(Bucket=bucket, Key=f"sd/{name}", Body=data)
    expected = tmp_path / "expected"
    for name, data in folder.items():
        if not name.endswith(".bin"):
            (expected / name).parent.mkdir(parents=True, exist_ok=True)
            (expected / name).write_bytes(data)
    (tmp_path / "style.safetensors").write_bytes(b"l" * 3_000)
    cache = ModelCache(tmp_path / "cache", settings=s3_settings(seaweed))

    file_sha, file_size = path_sha256(tmp_path / "style.safetensors")
    path, _ = cache.ensure(f"s3://{bucket}/loras/style.safetensors", file_sha, file_size)
    assert path.name == "style.safetensors" and path.read_bytes() == b"l" * 3_000

    folder_sha, folder_size = path_sha256(expected)
    path, _ = cache.ensure(f"s3://{bucket}/sd/", folder_sha, folder_size, kind="checkpoint")
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not (path / "unet" / "diffusion_pytorch_model.bin").exists()


def test_wrong_s3_credentials_are_a_clear_source_error(tmp_path: Path, seaweed: SeaweedS3) -> None:
    bucket = seaweed.create_bucket()
    seaweed.client().put_object(Bucket=bucket, Key="m.safetensors", Body=b"m" * 100)
    cache = ModelCache(tmp_path / "cache", settings=s3_settings(seaweed, secret="wrong"))
    with pytest.raises(SourceError, match="answered 403") as refused:
        cache.ensure(f"s3://{bucket}/m.safetensors", "0" * 64, 100)
    assert "wrong" not in str(refused.value)
    with pytest.raises(SourceError, match="expected s3://bucket/key"):
        cache.ensure("s3://bucket-only", "0" * 64, 100)
