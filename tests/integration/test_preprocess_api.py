"""A preprocess job over the HTTP API, its output made an input, and a ControlNet job that
names it: the assignment carries the ControlNet with its weight and the control image."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.integration.test_kinds_api import add, auth, claim, png, submit, upload


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def edges_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_preprocess_output_becomes_the_control_image_of_a_controlnet_job(
    api: TestClient, keys: Keys, db: Database
) -> None:
    source = upload(api, keys.alice_token, png()).json()["id"]
    job = submit(api, keys.alice_token, "preprocess", image=source, low_threshold=50)
    assert job.status_code == 201, job.text
    assignment = claim(api, keys, kinds=["preprocess"])
    assert assignment["kind"] == "preprocess" and assignment["models"] == []
    assert [i["name"] for i in assignment["inputs"]] == ["image"]
    worker = auth(keys.worker_token)
    attempt = assignment["attempt_id"]
    data = edges_png()
    api.put(
        f"/v1/worker/attempts/{attempt}/outputs/0",
        content=data,
        headers={**worker, "Content-Type": "image/png"},
    )
    done = api.post(
        f"/v1/worker/attempts/{attempt}/complete",
        json={"outputs": [{"index": 0, "width": 64, "height": 64}]},
        headers=worker,
    )
    assert done.status_code == 200, done.text
    job_id = job.json()["id"]
    bob = api.post(f"/v1/jobs/{job_id}/outputs/0/input", headers=auth(keys.bob_token))
    assert bob.status_code == 404
    missing = api.post(f"/v1/jobs/{job_id}/outputs/5/input", headers=auth(keys.alice_token))
    assert missing.status_code == 404
    made = api.post(f"/v1/jobs/{job_id}/outputs/0/input", headers=auth(keys.alice_token))
    assert made.status_code == 201, made.text
    control = made.json()
    assert control["sha256"] == hashlib.sha256(data).hexdigest()

    controlnet = add(db, "edges", "controlnet", "sd15")
    steered = submit(
        api,
        keys.alice_token,
        "txt2img",
        prompt="a fox",
        model="demo",
        width=64,
        height=64,
        steps=2,
        controlnet={"name": "edges", "image": control["id"], "weight": 0.6},
    )
    assert steered.status_code == 201, steered.text
    assignment = claim(api, keys)
    assert [(m["role"], m["sha256"], m["weight"]) for m in assignment["models"]][-1] == (
        "controlnet",
        controlnet.sha256,
        0.6,
    )
    [ref] = assignment["inputs"]
    assert (ref["name"], ref["input_id"]) == ("control_image", control["id"])
    unknown = submit(
        api,
        keys.alice_token,
        "txt2img",
        prompt="a fox",
        model="demo",
        controlnet={"name": "edges", "image": "ab" * 16},
    )
    assert unknown.status_code == 404 and "upload it first" in unknown.text


def test_a_depth_job_needs_a_registered_depth_model_422_until_there_is_one(
    api: TestClient, keys: Keys, db: Database
) -> None:
    source = upload(api, keys.alice_token, png()).json()["id"]
    refused = submit(api, keys.alice_token, "preprocess", image=source, annotator="depth")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "params", "depth_model"]
    assert "no annotator model named 'depth'" in refused.json()["detail"][0]["msg"]
    add(db, "depth", "annotator")
    job = submit(api, keys.alice_token, "preprocess", image=source, annotator="depth")
    assert job.status_code == 201, job.text
    assignment = claim(api, keys, kinds=["preprocess"])
    assert [(m["name"], m["role"]) for m in assignment["models"]] == [("depth", "annotator")]
