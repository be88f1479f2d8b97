"""The compose stack's bucket step (deploy/docker/bin/create_bucket.py) against a real SeaweedFS
S3 server: it creates the bucket once, finds it afterwards, and explains bad settings."""

from __future__ import annotations

import uuid

import pytest

from tests.seaweed import SeaweedS3
from tests.unit.deploy_support import load

create_bucket = load("deploy/docker/bin/create_bucket.py")


def s3_env(seaweed: SeaweedS3, bucket: str) -> dict[str, str]:
    return {
        "IMAGEFLEET_S3_BUCKET": bucket,
        "IMAGEFLEET_S3_ENDPOINT_URL": seaweed.endpoint_url,
        "IMAGEFLEET_S3_ACCESS_KEY_ID": seaweed.access_key,
        "IMAGEFLEET_S3_SECRET_ACCESS_KEY": seaweed.secret_key,
    }


def test_creates_the_bucket_then_finds_it(
    seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = f"fleet-{uuid.uuid4().hex[:10]}"
    for name, value in s3_env(seaweed, bucket).items():
        monkeypatch.setenv(name, value)
    assert create_bucket.main(["--wait", "10"]) == 0
    assert capsys.readouterr().out.startswith(f"created bucket '{bucket}'")
    assert create_bucket.main(["--wait", "10"]) == 0
    assert capsys.readouterr().out.startswith(f"found bucket '{bucket}'")
    seaweed.client().head_bucket(Bucket=bucket)


def test_bad_settings_exit_2_and_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IMAGEFLEET_S3_BUCKET", raising=False)
    assert create_bucket.main([]) == 2
    assert "IMAGEFLEET_S3_BUCKET is not set" in capsys.readouterr().err
    monkeypatch.setenv("IMAGEFLEET_S3_BUCKET", "fleet")
    monkeypatch.setenv("IMAGEFLEET_S3_MULTIPART_PART_BYTES", "1")
    assert create_bucket.main([]) == 2
    assert "IMAGEFLEET_S3_MULTIPART_PART_BYTES" in capsys.readouterr().err


def test_a_store_that_never_answers_fails_after_the_wait(
    seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = s3_env(seaweed, "fleet-denied")
    env["IMAGEFLEET_S3_SECRET_ACCESS_KEY"] = "wrong"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert create_bucket.main(["--wait", "0"]) == 1
    assert "not usable after 0s" in capsys.readouterr().err
