"""train_lora datasets named by URL or s3:// (orchestrator/dataset_import.py): fetched and
validated at submit through POST /v1/jobs, stored as a dataset input; every way a source can be
wrong is a 422 on the field. URLs come from a loopback HTTP server, s3:// objects from a real
SeaweedFS."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from tests.conftest import Keys
from tests.integration.test_s3_api import s3_env
from tests.seaweed import SeaweedS3
from tests.training_jobs import (
    base_model_fixture,  # noqa: F401 (the fixture `base_model`)
    dataset_zip,
    train_params,
)

GOOD = dataset_zip()
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/cat.zip": (200, {}, GOOD),
    "/moved": (302, {"Location": "/cat.zip"}, b""),
    "/loop": (302, {"Location": "/loop"}, b""),
    "/broken.zip": (200, {}, b"PK\x03\x04 not really a zip"),
    "/big.zip": (200, {}, b"x" * (len(GOOD) + 1000)),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, headers, body = ROUTES.get(self.path, (404, {}, b"no such file"))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def submit(api: TestClient, token: str, dataset: Any, **headers: str) -> Any:
    body = {"kind": "train_lora", "params": train_params(dataset=dataset)}
    return api.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}", **headers})


def error(response: Any) -> tuple[list[Any], str]:
    assert response.status_code == 422, response.text
    details = response.json()["detail"]  # a union's errors: one per branch
    return details[-1]["loc"], " | ".join(detail["msg"] for detail in details)


@pytest.mark.usefixtures("base_model")
def test_a_dataset_url_is_fetched_checked_and_stored_at_submit(
    settings: Settings, keys: Keys, server: str
) -> None:
    settings.dataset_allow_private = True
    settings.max_input_bytes = LIMIT = len(GOOD) + 100
    with TestClient(create_app(settings, run_duties=False)) as api:
        sha = hashlib.sha256(GOOD).hexdigest()
        first = submit(api, keys.alice_token, {"url": f"{server}/moved", "sha256": sha})
        assert first.status_code == 201, first.text
        dataset = first.json()["params"]["dataset"]
        assert isinstance(dataset, str)
        # the same bytes again: the same input, so an idempotent retry replays the first job
        again = submit(
            api, keys.alice_token, {"url": f"{server}/cat.zip"}, **{"Idempotency-Key": "k"}
        )
        assert again.json()["params"]["dataset"] == dataset
        replay = submit(
            api, keys.alice_token, {"url": f"{server}/cat.zip"}, **{"Idempotency-Key": "k"}
        )
        assert (replay.status_code, replay.json()["id"]) == (200, again.json()["id"])

        cases = {
            "/broken.zip": ("url", "the fetched dataset: the dataset is not a readable zip"),
            "/missing.zip": ("url", "answered HTTP 404"),
            "/loop": ("url", "redirects more than 3 times"),
            "/big.zip": ("url", f"larger than {LIMIT} bytes"),
        }
        for path, (field, message) in cases.items():
            loc, msg = error(submit(api, keys.alice_token, {"url": server + path}))
            assert loc[-1] == field and message in msg, (path, msg)
        loc, msg = error(
            submit(api, keys.alice_token, {"url": f"{server}/cat.zip", "sha256": "0" * 64})
        )
        assert loc[-1] == "sha256" and sha in msg
        loc, msg = error(submit(api, keys.alice_token, {"url": "ftp://example.com/a.zip"}))
        assert "expected an http(s) URL" in msg
        loc, msg = error(submit(api, keys.alice_token, {"url": f"{server}/a", "s3": "s3://b/k"}))
        assert 'exactly one of "url" and "s3"' in msg

    settings.dataset_allow_private = False
    with TestClient(create_app(settings, run_duties=False)) as api:
        loc, msg = error(submit(api, keys.alice_token, {"url": f"{server}/cat.zip"}))
        assert "non-public address 127.0.0.1" in msg and "DATASET_ALLOW_PRIVATE" in msg


@pytest.mark.usefixtures("base_model")
def test_an_s3_dataset_is_read_only_from_buckets_the_operator_allows(
    settings: Settings, keys: Keys, seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_bucket, data_bucket = seaweed.create_bucket(), seaweed.create_bucket()
    s3 = seaweed.client()
    s3.put_object(Bucket=data_bucket, Key="sets/cat.zip", Body=GOOD)
    s3.put_object(Bucket=store_bucket, Key="fleet/inputs/other/secret.zip", Body=GOOD)
    for name, value in s3_env(seaweed, store_bucket).items():
        monkeypatch.setenv(name, value)
    settings.dataset_s3_buckets = f"{data_bucket}, {store_bucket}"
    with TestClient(create_app(settings, run_duties=False)) as api:
        made = submit(api, keys.alice_token, {"s3": f"s3://{data_bucket}/sets/cat.zip"})
        assert made.status_code == 201, made.text
        dataset = made.json()["params"]["dataset"]
        stored = s3.list_objects_v2(Bucket=store_bucket, Prefix="fleet/inputs/")["Contents"]
        assert any(item["Key"].endswith(f"{dataset}.zip") for item in stored)

        loc, msg = error(submit(api, keys.alice_token, {"s3": f"s3://{data_bucket}/sets/no.zip"}))
        assert loc[-1] == "s3" and "does not exist" in msg
        loc, msg = error(submit(api, keys.alice_token, {"s3": "s3://elsewhere/cat.zip"}))
        assert "not one this orchestrator reads datasets from" in msg
        secret = f"s3://{store_bucket}/fleet/inputs/other/secret.zip"
        loc, msg = error(submit(api, keys.alice_token, {"s3": secret}))
        assert "artifact store's own files" in msg
