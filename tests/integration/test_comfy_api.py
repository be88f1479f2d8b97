"""comfy jobs over the HTTP API: a graph is checked at submit and its loaders become the combo."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from tests.comfy_graphs import lora_controlnet_img2img, txt2img
from tests.conftest import Keys
from tests.integration.test_kinds_api import add, auth, claim, png, upload


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def submit(api: TestClient, token: str, graph: object) -> object:
    body = {"kind": "comfy", "params": {"graph": graph}}
    return api.post("/v1/jobs", json=body, headers=auth(token))


def test_an_unknown_node_and_a_broken_link_are_422s_naming_them(
    api: TestClient, keys: Keys
) -> None:
    graph = txt2img("demo")
    graph["10"] = {"class_type": "FaceDetailer", "inputs": {}}
    response = submit(api, keys.alice_token, graph)
    assert response.status_code == 422
    assert "unknown node types: FaceDetailer" in response.text
    graph = txt2img("demo")
    graph["8"]["inputs"]["samples"] = ["42", 0]
    response = submit(api, keys.alice_token, graph)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "params", "graph", "8", "inputs", "samples"]
    assert "links to node 42" in error["msg"]
    response = submit(api, keys.alice_token, {"nodes": [], "links": []})
    assert response.status_code == 422 and "Save (API)" in response.text


def test_a_graphs_loaders_and_upload_become_the_jobs_combo_and_inputs(
    api: TestClient, keys: Keys, db: Database
) -> None:
    lora = add(db, "tiny-lora", "lora", "sd15")
    controlnet = add(db, "tiny-controlnet", "controlnet")
    image_id = upload(api, keys.alice_token, png(80, 80)).json()["id"]
    response = submit(api, keys.alice_token, lora_controlnet_img2img(image_id))
    assert response.status_code == 201, response.text
    job = response.json()
    assert [(m["role"], m["name"], m["weight"]) for m in job["models"]] == [
        ("checkpoint", "demo", None),
        ("lora", "tiny-lora", 0.8),
        ("controlnet", "tiny-controlnet", None),
    ]
    assignment = claim(api, keys, kinds=["comfy"])
    assert assignment["kind"] == "comfy"
    assert {m["sha256"] for m in assignment["models"]} >= {lora.sha256, controlnet.sha256}
    assert [(i["name"], i["input_id"]) for i in assignment["inputs"]] == [("node_5", image_id)]
    assert assignment["params"]["pixels"] == 80 * 80
    missing = lora_controlnet_img2img(image_id, lora="no-such-lora")
    response = submit(api, keys.alice_token, missing)
    assert response.status_code == 404 and "no-such-lora" in response.text
