"""The ComfyUI-compatible endpoints in process: credentials as ComfyUI clients send them,
node_errors in ComfyUI's shape, the queue, object_info, uploads and the websocket handshake.
(A real ComfyUI client package runs a graph end to end in tests/e2e/test_comfy_client.py.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.comfy_graphs import txt2img
from tests.conftest import Keys, sqlite_url
from tests.integration.test_kinds_api import png


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"comfy:{token}".encode()).decode()}


def test_every_way_a_comfyui_client_sends_the_key_works_and_none_is_refused(
    api: TestClient, keys: Keys
) -> None:
    assert api.get("/queue").status_code == 401
    assert api.get("/queue", headers=basic("wrong")).status_code == 401
    assert api.get("/queue", headers=basic(keys.worker_token)).status_code == 403
    for request in (
        {"headers": {"Authorization": f"Bearer {keys.alice_token}"}},
        {"headers": basic(keys.alice_token)},
        {"params": {"token": keys.alice_token}},
    ):
        assert api.get("/queue", **request).status_code == 200  # type: ignore[arg-type]
    with pytest.raises(WebSocketDisconnect), api.websocket_connect("/ws?clientId=c") as ws:
        ws.receive_json()


def test_a_prompt_is_queued_and_bad_ones_get_comfyuis_node_errors(
    api: TestClient, keys: Keys
) -> None:
    auth = basic(keys.alice_token)
    graph = txt2img("demo.safetensors")
    graph["8"]["inputs"]["samples"] = ["77", 0]
    graph["10"] = {"class_type": "FaceDetailer", "inputs": {}}
    response = api.post("/prompt", json={"prompt": graph}, headers=auth)
    assert response.status_code == 400
    body = response.json()
    assert "FaceDetailer" in body["error"]["message"]
    assert body["node_errors"]["8"]["errors"][0]["extra_info"] == {"input_name": "samples"}
    assert body["node_errors"]["10"]["class_type"] == "FaceDetailer"
    unknown_model = api.post("/prompt", json={"prompt": txt2img("nope")}, headers=auth)
    assert unknown_model.status_code == 400
    assert "no model named 'nope'" in unknown_model.json()["error"]["message"]

    accepted = api.post(
        "/prompt", json={"prompt": txt2img("demo"), "client_id": "c1"}, headers=auth
    )
    assert accepted.status_code == 200, accepted.text
    prompt_id = accepted.json()["prompt_id"]
    assert accepted.json()["node_errors"] == {}
    queue = api.get("/queue", headers=auth).json()
    assert [item[1] for item in queue["queue_pending"]] == [prompt_id]
    assert queue["queue_pending"][0][4] == ["9"]
    assert api.get(f"/history/{prompt_id}", headers=auth).json() == {}
    assert api.get(f"/history/{prompt_id}", headers=basic(keys.bob_token)).status_code == 404
    with api.websocket_connect(f"/ws?clientId=c1&token={keys.alice_token}") as ws:
        assert ws.receive_json()["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert api.post("/queue", json={"clear": True}, headers=auth).json() == {"deleted": [prompt_id]}
    assert api.get("/prompt", headers=auth).json() == {"exec_info": {"queue_remaining": 0}}


def test_object_info_describes_the_nodes_with_registered_models_and_uploads_name_inputs(
    api: TestClient, keys: Keys
) -> None:
    auth = basic(keys.alice_token)
    info = api.get("/object_info", headers=auth).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] == [["demo"]]
    assert info["KSampler"]["input"]["required"]["sampler_name"][0][0] == "euler"
    assert info["SaveImage"]["output_node"] is True
    assert api.get("/object_info/NoSuchNode", headers=auth).status_code == 404
    files = {"image": ("cat.png", png(), "application/octet-stream")}
    uploaded = api.post("/upload/image", files=files, headers=auth)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["type"] == "input" and len(uploaded.json()["name"]) == 32
    assert api.get("/view", params={"filename": "x.png"}, headers=auth).status_code == 404
