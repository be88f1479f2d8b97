"""The orchestrator on an S3-compatible store (a real SeaweedFS): workers upload straight to
the bucket through presigned URLs, clients download through presigned URLs or the API."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagefleet.artifacts.base import ArtifactStoreUnavailable
from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.retention import purge_expired
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.seaweed import SeaweedS3

PARAMS = {"prompt": "x", "model": "demo", "width": 64, "height": 64}


def png_bytes(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def s3_env(seaweed: SeaweedS3, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "IMAGEFLEET_S3_ENDPOINT_URL": seaweed.endpoint_url,
        "IMAGEFLEET_S3_BUCKET": bucket,
        "IMAGEFLEET_S3_ACCESS_KEY_ID": seaweed.access_key,
        "IMAGEFLEET_S3_SECRET_ACCESS_KEY": seaweed.secret_key,
        "IMAGEFLEET_S3_PREFIX": "fleet",
        **extra,
    }


@pytest.fixture
def s3_settings(
    seaweed: SeaweedS3, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in s3_env(seaweed, seaweed.create_bucket()).items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def api(s3_settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claim(api: TestClient, keys: Keys, **params: Any) -> dict[str, Any]:
    api.post(
        "/v1/jobs",
        json={"kind": "txt2img", "params": {**PARAMS, **params}},
        headers=auth(keys.alice_token),
    )
    body = {"worker_id": "w", "node_id": "n"}
    assignment: dict[str, Any] = api.post(
        "/v1/worker/claim", json=body, headers=auth(keys.worker_token)
    ).json()["assignment"]
    return assignment


def complete(
    api: TestClient, keys: Keys, assignment: dict[str, Any], data: bytes, count: int = 1
) -> httpx.Response:
    outputs = [
        {
            "index": i,
            "seed": 1,
            "width": 64,
            "height": 64,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for i in range(count)
    ]
    return api.post(
        f"/v1/worker/attempts/{assignment['attempt_id']}/complete",
        json={"outputs": outputs},
        headers=auth(keys.worker_token),
    )


def test_workers_upload_straight_to_the_bucket_and_clients_download_from_it(
    api: TestClient, keys: Keys
) -> None:
    assignment = claim(api, keys, num_images=2)
    assert [u["index"] for u in assignment["uploads"]] == [0, 1]
    data = png_bytes()
    for upload in assignment["uploads"]:
        put = httpx.put(
            upload["url"], content=data, headers={"Content-Type": upload["content_type"]}
        )
        assert put.status_code == 200
    assert complete(api, keys, assignment, data, count=2).json()["job_status"] == "succeeded"
    job = api.get(f"/v1/jobs/{assignment['job_id']}", headers=auth(keys.alice_token)).json()
    url = job["outputs"][0]["url"]
    assert "X-Amz-Signature" in url and "/fleet/jobs/" in url
    assert httpx.get(url).content == data  # no API key needed: the URL is the permission
    assert job["outputs"][1]["size_bytes"] == len(data)


def test_completing_without_uploading_is_refused(api: TestClient, keys: Keys) -> None:
    assignment = claim(api, keys)
    response = complete(api, keys, assignment, b"never sent")
    assert response.status_code == 422 and "uploaded" in response.json()["detail"][0]["msg"]


def test_uploads_through_the_api_still_work_on_s3(api: TestClient, keys: Keys) -> None:
    assignment = claim(api, keys)
    data = png_bytes()
    put = api.put(
        f"/v1/worker/attempts/{assignment['attempt_id']}/outputs/0",
        content=data,
        headers={**auth(keys.worker_token), "Content-Type": "image/png"},
    )
    assert put.status_code == 200
    assert complete(api, keys, assignment, data).json()["job_status"] == "succeeded"


def test_big_outputs_go_up_in_parts(api: TestClient, keys: Keys) -> None:
    assignment = claim(api, keys)
    data = png_bytes() + b"\0" * (11 << 20)  # over the 5 MiB minimum part size twice
    prefix = f"/v1/worker/attempts/{assignment['attempt_id']}/outputs/0/multipart"
    plan = api.post(prefix, json={"size_bytes": len(data)}, headers=auth(keys.worker_token)).json()
    parts, offset = [], 0
    for part in plan["parts"]:
        response = httpx.put(part["url"], content=data[offset : offset + part["size_bytes"]])
        offset += part["size_bytes"]
        parts.append({"part_number": part["part_number"], "etag": response.headers["ETag"]})
    done = api.post(
        f"{prefix}/complete",
        json={"upload_id": plan["upload_id"], "parts": parts},
        headers=auth(keys.worker_token),
    )
    assert done.status_code == 200 and done.json()["size_bytes"] == len(data)
    assert complete(api, keys, assignment, data).json()["job_status"] == "succeeded"


def test_downloads_can_be_proxied_through_the_api(
    s3_settings: Settings, keys: Keys, model: Model
) -> None:
    s3_settings.proxy_downloads = True
    with TestClient(create_app(s3_settings, run_duties=False)) as api:
        assignment = claim(api, keys)
        data = png_bytes()
        httpx.put(
            assignment["uploads"][0]["url"], content=data, headers={"Content-Type": "image/png"}
        )
        complete(api, keys, assignment, data)
        job = api.get(f"/v1/jobs/{assignment['job_id']}", headers=auth(keys.alice_token)).json()
        assert job["outputs"][0]["url"].startswith("http://testserver/v1/jobs/")
        download = api.get(job["outputs"][0]["url"], headers=auth(keys.alice_token))
        assert download.content == data


def test_retention_deletes_the_objects_from_the_bucket(api: TestClient, keys: Keys) -> None:
    assignment = claim(api, keys)
    data = png_bytes()
    httpx.put(assignment["uploads"][0]["url"], content=data, headers={"Content-Type": "image/png"})
    complete(api, keys, assignment, data)
    app: Any = api.app
    store = app.state.artifacts
    key = f"jobs/{assignment['job_id']}/{assignment['attempt_id']}/0.png"
    assert store.head(key) is not None
    import time

    assert purge_expired(app.state.db, store, older_than_seconds=0, now=time.time() + 1) == 1
    assert store.head(key) is None


def test_a_missing_bucket_stops_the_orchestrator_at_start_up(
    seaweed: SeaweedS3, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = s3_env(seaweed, "no-such-bucket")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with (
        pytest.raises(ArtifactStoreUnavailable, match="no-such-bucket"),
        TestClient(create_app(settings)),
    ):
        pass
    result = subprocess.run(
        [sys.executable, "-m", "imagefleet", "serve", "--port", "1", "--data-dir", str(tmp_path)],
        env={**env, "PATH": "", "IMAGEFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        result.returncode == 2
        and "artifact store:" in result.stderr
        and "no-such-bucket" in result.stderr
    )
