"""Artifact stores against real storage: a temporary directory, and a SeaweedFS S3 server.

Behaviour every store shares runs on both; presigned URLs and multipart run on S3 only, with
plain httpx standing in for a worker that holds no credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagefleet.artifacts.base import (
    ArtifactStore,
    ArtifactStoreUnavailable,
    ArtifactTooLarge,
    ArtifactUploadRejected,
    verify_direct_upload,
)
from imagefleet.artifacts.local import LocalArtifactStore
from imagefleet.artifacts.s3 import S3ArtifactStore
from imagefleet.artifacts.s3_config import S3Config
from tests.harness.ports import free_ports
from tests.seaweed import SeaweedS3

MIB = 1 << 20
SMALL_MULTIPART = {"multipart_threshold_bytes": 5 * MIB, "multipart_part_bytes": 5 * MIB}


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def put(store: ArtifactStore, key: str, data: bytes, max_bytes: int = 64 * MIB) -> tuple[int, str]:
    """Runs put_stream the way the orchestrator does: the body arriving in 256 KiB chunks."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    return asyncio.run(store.put_stream(key, chunks(), max_bytes))


@pytest.fixture(scope="module")
def bucket(seaweed: SeaweedS3) -> str:
    return seaweed.create_bucket()


def s3_store(seaweed: SeaweedS3, bucket: str, **overrides: Any) -> S3ArtifactStore:
    """A store on its own prefix of the shared bucket, so tests cannot see each other's keys."""
    values: dict[str, Any] = {
        "endpoint_url": seaweed.endpoint_url,
        "bucket": bucket,
        "prefix": f"t-{uuid.uuid4().hex[:8]}",
        "access_key_id": seaweed.access_key,
        "secret_access_key": seaweed.secret_key,
        **overrides,
    }
    return S3ArtifactStore(S3Config.model_validate(values))


def dangling_uploads(seaweed: SeaweedS3, store: S3ArtifactStore) -> list[str]:
    listing = seaweed.client().list_multipart_uploads(
        Bucket=store.config.bucket, Prefix=store.config.prefix
    )
    return [upload["Key"] for upload in listing.get("Uploads", [])]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    server: SeaweedS3 = request.getfixturevalue("seaweed")
    return s3_store(server, request.getfixturevalue("bucket"), **SMALL_MULTIPART)


@pytest.fixture
def s3(seaweed: SeaweedS3, bucket: str) -> S3ArtifactStore:
    return s3_store(seaweed, bucket, **SMALL_MULTIPART)


# Shared behaviour


def test_a_stream_round_trips_with_its_size_sha256_and_head(store: ArtifactStore) -> None:
    data = payload(700_000)
    assert put(store, "jobs/j1/a1/0.png", data) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.read("jobs/j1/a1/0.png") == data
    info = store.head("jobs/j1/a1/0.png")
    assert info is not None and info.size_bytes == len(data) and info.etag
    store.delete("jobs/j1/a1/0.png")
    assert store.head("jobs/j1/a1/0.png") is None
    with pytest.raises(FileNotFoundError):
        store.read("jobs/j1/a1/0.png")
    store.delete("jobs/j1/a1/0.png")  # deleting twice is fine: retention sweeps repeat


def test_delete_many_removes_every_key_and_counts_missing_ones(store: ArtifactStore) -> None:
    keys = [f"jobs/j2/a1/{i}.png" for i in range(3)]
    for key in keys:
        put(store, key, b"png")
    put(store, "jobs/j2/a1/keep.png", b"png")
    assert store.delete_many([*keys, "jobs/j2/a1/never.png"]) == 4
    assert all(store.head(key) is None for key in keys)
    assert store.read("jobs/j2/a1/keep.png") == b"png"
    assert store.delete_many([]) == 0


@pytest.mark.parametrize(
    "key", ["../escape.png", "/etc/passwd", "jobs/../../x", "jobs/./x", "a/.hidden", "a//b", ""]
)
def test_keys_that_could_escape_the_store_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        put(store, key, b"x")
    for call in (store.read, store.head, store.delete, store.presigned_get):
        with pytest.raises(ValueError, match="invalid artifact key"):
            call(key)
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.delete_many(["jobs/fine.png", key])
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.presigned_put(key, "image/png", MIB)
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.start_multipart(key, 6 * MIB, "application/octet-stream")


def test_an_upload_over_the_limit_raises_and_leaves_nothing_behind(
    store: ArtifactStore, request: pytest.FixtureRequest
) -> None:
    """6 MiB against a 5.5 MiB limit: on S3 this is past the multipart threshold, so a part has
    been stored when the limit trips and the upload must be aborted."""
    with pytest.raises(ArtifactTooLarge, match="limit of 5767168 bytes"):
        put(store, "jobs/j3/a1/0.png", payload(6 * MIB), max_bytes=5 * MIB + MIB // 2)
    assert store.head("jobs/j3/a1/0.png") is None
    if isinstance(store, LocalArtifactStore):
        assert [p for p in store.root.rglob("*") if p.is_file()] == []
    else:
        assert isinstance(store, S3ArtifactStore)
        assert dangling_uploads(request.getfixturevalue("seaweed"), store) == []


def test_the_start_up_check_passes_on_a_working_store(store: ArtifactStore) -> None:
    store.check()


# Local only


def test_the_local_store_offers_no_direct_transfers(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    assert store.presigned_put("jobs/x/0.png", "image/png", MIB) is None
    assert store.presigned_get("jobs/x/0.png", "x.png") is None
    assert store.start_multipart("jobs/x/big.bin", 20 * MIB, "application/octet-stream") is None
    with pytest.raises(ArtifactUploadRejected, match="through the API"):
        store.finish_multipart("jobs/x/big.bin", "upload", [(1, "etag")])


def test_the_local_check_fails_clearly_when_the_directory_cannot_be_written(
    tmp_path: Path,
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    shutil.rmtree(store.root)
    store.root.write_bytes(b"a file where the directory should be")
    with pytest.raises(ArtifactStoreUnavailable, match="IMAGEFLEET_ARTIFACTS_DIR"):
        store.check()


# S3 only


def test_keys_are_stored_under_the_prefix(seaweed: SeaweedS3, s3: S3ArtifactStore) -> None:
    put(s3, "jobs/j4/a1/0.png", b"png")
    raw = seaweed.client().head_object(
        Bucket=s3.config.bucket, Key=f"{s3.config.prefix}/jobs/j4/a1/0.png"
    )
    assert raw["ContentLength"] == 3 and raw["ContentType"] == "image/png"


def test_a_file_past_the_threshold_streams_through_multipart_and_reads_back_identical(
    seaweed: SeaweedS3,
    s3: S3ArtifactStore,
) -> None:
    data = payload(11 * MIB + 12345)
    assert put(s3, "loras/big.safetensors", data)[1] == hashlib.sha256(data).hexdigest()
    assert s3.read("loras/big.safetensors") == data
    info = s3.head("loras/big.safetensors")
    assert info is not None and info.etag.endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert dangling_uploads(seaweed, s3) == []


def test_a_client_disconnecting_mid_multipart_leaves_no_stored_parts(
    seaweed: SeaweedS3, s3: S3ArtifactStore
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(7):
            yield payload(MIB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(s3.put_stream("loras/partial.bin", chunks(), 64 * MIB))
    assert dangling_uploads(seaweed, s3) == []
    assert s3.head("loras/partial.bin") is None


def test_a_presigned_put_accepts_an_upload_without_credentials(s3: S3ArtifactStore) -> None:
    url = s3.presigned_put("jobs/j5/a1/0.png", "image/png", MIB)
    assert url is not None
    response = httpx.put(url, content=b"direct png", headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert s3.read("jobs/j5/a1/0.png") == b"direct png"
    assert verify_direct_upload(s3, "jobs/j5/a1/0.png", MIB).size_bytes == 10


def test_a_direct_upload_over_the_limit_is_deleted_on_verification(s3: S3ArtifactStore) -> None:
    url = s3.presigned_put("jobs/j6/a1/0.png", "image/png", 4)
    assert url is not None
    httpx.put(url, content=b"too long", headers={"Content-Type": "image/png"}).raise_for_status()
    with pytest.raises(ArtifactTooLarge, match="it was deleted"):
        verify_direct_upload(s3, "jobs/j6/a1/0.png", 4)
    assert s3.head("jobs/j6/a1/0.png") is None


def test_a_presigned_get_downloads_with_the_requested_filename(s3: S3ArtifactStore) -> None:
    put(s3, "jobs/j7/a1/0.png", b"png bytes")
    url = s3.presigned_get("jobs/j7/a1/0.png", 'my "job"-0.png')
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"png bytes"
    assert response.headers["content-disposition"] == 'inline; filename="my _job_-0.png"; ' + (
        "filename*=UTF-8''my%20%22job%22-0.png"
    )


def test_a_garbled_or_expired_signature_is_refused(
    seaweed: SeaweedS3,
    bucket: str,
) -> None:
    store = s3_store(seaweed, bucket, presign_expiry_seconds=1)
    put(store, "jobs/j8/a1/0.png", b"secret")
    url = store.presigned_get("jobs/j8/a1/0.png")
    assert url is not None
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    put_url = store.presigned_put("jobs/j8/a1/0.png", "image/png", MIB)
    assert put_url is not None
    assert (
        httpx.put(put_url, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 403
    )
    time.sleep(2.1)
    expired = httpx.get(url)
    assert expired.status_code == 403 and "expired" in expired.text
    assert store.read("jobs/j8/a1/0.png") == b"secret"


def test_a_direct_multipart_upload_assembles_the_parts(
    seaweed: SeaweedS3,
    s3: S3ArtifactStore,
) -> None:
    data = payload(11 * MIB, seed=2)
    plan = s3.start_multipart("loras/direct.safetensors", len(data), "application/octet-stream")
    assert plan is not None and plan.part_size == 5 * MIB
    assert [(p.part_number, p.size_bytes) for p in plan.parts] == [
        (1, 5 * MIB),
        (2, 5 * MIB),
        (3, MIB),
    ]
    etags = []
    offset = 0
    for part in plan.parts:
        response = httpx.put(part.url, content=data[offset : offset + part.size_bytes])
        assert response.status_code == 200, response.text
        etags.append((part.part_number, response.headers["etag"]))
        offset += part.size_bytes
    s3.finish_multipart("loras/direct.safetensors", plan.upload_id, etags)
    assert s3.read("loras/direct.safetensors") == data
    assert dangling_uploads(seaweed, s3) == []


def test_a_part_of_the_wrong_size_is_refused(s3: S3ArtifactStore) -> None:
    """Each part URL is signed with its length, which is what caps a direct upload's size."""
    plan = s3.start_multipart("loras/cheat.bin", 6 * MIB, "application/octet-stream")
    assert plan is not None
    assert httpx.put(plan.parts[1].url, content=b"x" * (MIB + 1)).status_code == 403
    s3.abort_multipart("loras/cheat.bin", plan.upload_id)


def test_finishing_with_a_wrong_etag_is_rejected_as_a_client_error(s3: S3ArtifactStore) -> None:
    plan = s3.start_multipart("loras/wrong.bin", MIB, "application/octet-stream")
    assert plan is not None and len(plan.parts) == 1
    httpx.put(plan.parts[0].url, content=payload(MIB)).raise_for_status()
    with pytest.raises(ArtifactUploadRejected, match="ETag"):
        s3.finish_multipart("loras/wrong.bin", plan.upload_id, [(1, '"0000"')])
    s3.abort_multipart("loras/wrong.bin", plan.upload_id)


def test_an_aborted_direct_multipart_upload_leaves_nothing(
    seaweed: SeaweedS3,
    s3: S3ArtifactStore,
) -> None:
    plan = s3.start_multipart("loras/aborted.bin", 6 * MIB, "application/octet-stream")
    assert plan is not None
    httpx.put(plan.parts[0].url, content=payload(5 * MIB)).raise_for_status()
    assert dangling_uploads(seaweed, s3) == [f"{s3.config.prefix}/loras/aborted.bin"]
    s3.abort_multipart("loras/aborted.bin", plan.upload_id)
    s3.abort_multipart("loras/aborted.bin", plan.upload_id)  # aborting twice is fine
    assert dangling_uploads(seaweed, s3) == []
    assert s3.head("loras/aborted.bin") is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("closed port", "cannot reach S3 endpoint"),
        ("missing bucket", "does not exist: create the bucket"),
        ("wrong secret", "rejected the credentials (SignatureDoesNotMatch)"),
        ("unknown key", "rejected the credentials (InvalidAccessKeyId)"),
        ("read-only key", "cannot write probe object"),
    ],
)
def test_the_check_names_the_endpoint_bucket_and_fix_when_the_store_is_unusable(
    seaweed: SeaweedS3,
    bucket: str,
    change: str,
    words: str,
) -> None:
    overrides: dict[str, Any] = {
        "closed port": {"endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}"},
        "missing bucket": {"bucket": "no-such-bucket"},
        "wrong secret": {"secret_access_key": "not-the-secret"},
        "unknown key": {"access_key_id": "nobody"},
        "read-only key": {
            "access_key_id": seaweed.readonly_access_key,
            "secret_access_key": seaweed.readonly_secret_key,
        },
    }[change]
    store = s3_store(seaweed, overrides.pop("bucket", bucket), **overrides)
    with pytest.raises(ArtifactStoreUnavailable) as failure:
        store.check()
    message = str(failure.value)
    assert words in message
    assert store.config.bucket in message and str(store.config.endpoint_url) in message


# Configuration


def test_the_config_comes_from_environment_variables() -> None:
    config = S3Config.from_env(
        {
            "IMAGEFLEET_S3_ENDPOINT_URL": "https://acc.r2.cloudflarestorage.com",
            "IMAGEFLEET_S3_REGION": "auto",
            "IMAGEFLEET_S3_BUCKET": "fleet",
            "IMAGEFLEET_S3_PREFIX": "/prod/",
            "IMAGEFLEET_S3_ACCESS_KEY_ID": "id",
            "IMAGEFLEET_S3_SECRET_ACCESS_KEY": "s3cr3t-value",
            "IMAGEFLEET_S3_PRESIGN_EXPIRY_SECONDS": "600",
            "IMAGEFLEET_S3_MULTIPART_THRESHOLD_BYTES": str(32 * MIB),
            "IMAGEFLEET_S3_MULTIPART_PART_BYTES": str(16 * MIB),
        }
    )
    assert config is not None
    assert (config.endpoint_url, config.region, config.bucket, config.prefix) == (
        "https://acc.r2.cloudflarestorage.com",
        "auto",
        "fleet",
        "prod",
    )
    assert config.secret_access_key is not None and "s3cr3t" not in repr(config)
    assert (config.presign_expiry_seconds, config.multipart_part_bytes) == (600, 16 * MIB)
    assert config.addressing_style == "path"


def test_no_bucket_in_the_environment_means_no_s3_store() -> None:
    assert S3Config.from_env({"IMAGEFLEET_S3_ENDPOINT_URL": "http://x"}) is None
    assert S3Config.from_env({"IMAGEFLEET_S3_BUCKET": ""}) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGEFLEET_S3_MULTIPART_PART_BYTES", str(MIB)),
        ("IMAGEFLEET_S3_PRESIGN_EXPIRY_SECONDS", "soon"),
        ("IMAGEFLEET_S3_PREFIX", "a/../b"),
        ("IMAGEFLEET_S3_ACCESS_KEY_ID", "id-without-secret"),
    ],
)
def test_a_bad_environment_value_is_reported_by_its_variable_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="invalid S3 artifact store settings") as failure:
        S3Config.from_env({"IMAGEFLEET_S3_BUCKET": "fleet", name: value})
    assert name in str(failure.value)
