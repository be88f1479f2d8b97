"""Job kinds, model combos and inputs over the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import Model, register_model
from tests.conftest import Keys

TXT2IMG = {"prompt": "a fox", "model": "demo", "width": 64, "height": 64, "steps": 2}


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png(width: int = 64, height: int = 64, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def add(db: Database, name: str, kind: str, base: str | None = None, sha: str = "") -> Model:
    with db.write() as conn:
        return register_model(
            conn,
            name=name,
            kind=kind,
            source=f"/models/{name}",
            sha256=sha or name[0] * 64,
            size_bytes=10,
            now=1.0,
            base=base,
        )


def submit(api: TestClient, token: str, kind: str, **params: Any) -> Any:
    return api.post("/v1/jobs", json={"kind": kind, "params": params}, headers=auth(token))


def upload(api: TestClient, token: str, data: bytes, content_type: str = "image/png") -> Any:
    return api.post(
        "/v1/inputs", content=data, headers={**auth(token), "Content-Type": content_type}
    )


def claim(api: TestClient, keys: Keys, **capabilities: Any) -> Any:
    body = {"worker_id": "w", "node_id": "n", "capabilities": capabilities}
    response = api.post("/v1/worker/claim", json=body, headers=auth(keys.worker_token))
    assert response.status_code == 200, response.text
    return response.json()["assignment"]


def test_the_openapi_document_shows_every_kind(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    assert {"Txt2ImgJob", "Img2ImgJob", "InpaintJob"} <= set(schemas)


def test_a_combo_is_resolved_to_exact_versions_and_keyed(
    api: TestClient, keys: Keys, db: Database
) -> None:
    lora = add(db, "lora-a", "lora", "sd15")
    vae = add(db, "vae-x", "vae")
    emb = add(db, "emb-e", "embedding")
    response = submit(
        api,
        keys.alice_token,
        "txt2img",
        **TXT2IMG,
        loras=[{"name": "lora-a", "weight": 0.7}],
        vae="vae-x@1",
        embeddings=["emb-e"],
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert [(m["role"], m["name"], m["version"], m["weight"]) for m in job["models"]] == [
        ("checkpoint", "demo", 1, None),
        ("lora", "lora-a", 1, 0.7),
        ("vae", "vae-x", 1, None),
        ("embedding", "emb-e", 1, None),
    ]
    assert job["combo_key"] and len(job["combo_key"]) == 64
    assignment = claim(api, keys)
    assert [(m["role"], m["sha256"]) for m in assignment["models"]] == [
        ("checkpoint", "d" * 64),
        ("lora", lora.sha256),
        ("vae", vae.sha256),
        ("embedding", emb.sha256),
    ]
    assert assignment["combo_key"] == job["combo_key"]
    # LoRA weights are set per request, so they do not change what must be resident.
    again = submit(
        api,
        keys.alice_token,
        "txt2img",
        **TXT2IMG,
        loras=[{"name": "lora-a", "weight": 0.2}],
        vae="vae-x",
        embeddings=["emb-e"],
    ).json()
    assert again["combo_key"] == job["combo_key"]


def test_a_model_of_the_wrong_kind_or_base_is_a_422_naming_it(
    api: TestClient, keys: Keys, db: Database
) -> None:
    add(db, "lora-xl", "lora", "sdxl")
    add(db, "vae-x", "vae")
    with db.write() as conn:
        register_model(
            conn,
            name="sd15",
            kind="checkpoint",
            source="/m",
            sha256="5" * 64,
            size_bytes=1,
            now=1,
            base="sd15",
        )
    wrong_kind = submit(api, keys.alice_token, "txt2img", **{**TXT2IMG, "model": "vae-x"})
    assert wrong_kind.status_code == 422
    assert wrong_kind.json()["detail"][0]["loc"] == ["body", "params", "model"]
    assert "is a vae, but checkpoint takes a checkpoint" in wrong_kind.text
    wrong_base = submit(
        api,
        keys.alice_token,
        "txt2img",
        **{**TXT2IMG, "model": "sd15"},
        loras=[{"name": "lora-xl"}],
    )
    assert wrong_base.status_code == 422
    assert wrong_base.json()["detail"][0]["loc"] == ["body", "params", "loras", 0]
    assert "is for sdxl, but the checkpoint is sd15" in wrong_base.text
    unknown = submit(api, keys.alice_token, "txt2img", **TXT2IMG, loras=[{"name": "nope"}])
    assert unknown.status_code == 404 and "no model named 'nope'" in unknown.text
    missing_version = submit(api, keys.alice_token, "txt2img", **{**TXT2IMG, "model": "demo@9"})
    assert missing_version.status_code == 404 and "version 9" in missing_version.text


def test_lora_limits_are_server_settings(api: TestClient, keys: Keys, db: Database) -> None:
    add(db, "lora-a", "lora")
    heavy = submit(
        api, keys.alice_token, "txt2img", **TXT2IMG, loras=[{"name": "lora-a", "weight": 3}]
    )
    assert heavy.status_code == 422
    assert heavy.json()["detail"][0]["loc"] == ["body", "params", "loras", 0, "weight"]
    many = submit(api, keys.alice_token, "txt2img", **TXT2IMG, loras=[{"name": "lora-a"}] * 6)
    assert many.status_code == 422 and "at most 5 LoRAs" in many.text


def test_inputs_are_checked_at_upload(api: TestClient, keys: Keys, settings: Settings) -> None:
    good = upload(api, keys.alice_token, png(80, 48))
    assert good.status_code == 201, good.text
    assert {k: good.json()[k] for k in ("content_type", "width", "height")} == {
        "content_type": "image/png",
        "width": 80,
        "height": 48,
    }
    assert upload(api, keys.alice_token, b"not an image").status_code == 422
    noisy = io.BytesIO()
    Image.effect_noise((64, 64), 64).convert("RGB").save(noisy, format="PNG")
    truncated = noisy.getvalue()[: len(noisy.getvalue()) // 2]
    assert upload(api, keys.alice_token, truncated).status_code == 422
    assert upload(api, keys.alice_token, png(), "image/gif").status_code == 415
    assert upload(api, keys.alice_token, png(), "image/jpeg").status_code == 422  # lies
    big = upload(api, keys.alice_token, b"x" * (settings.max_input_bytes + 1))
    assert big.status_code == 413
    form = api.post(
        "/v1/inputs",
        files={"file": ("init.png", png(), "image/png")},
        headers=auth(keys.alice_token),
    )
    assert form.status_code == 201, form.text


def test_img2img_reads_its_init_image_and_takes_its_size(api: TestClient, keys: Keys) -> None:
    init = upload(api, keys.alice_token, png(100, 72)).json()
    response = submit(
        api,
        keys.alice_token,
        "img2img",
        prompt="x",
        model="demo",
        init_image=init["id"],
        strength=0.5,
        steps=4,
    )
    assert response.status_code == 201, response.text
    params = response.json()["params"]
    assert (params["width"], params["height"]) == (96, 72)  # down to the latent grid
    assignment = claim(api, keys, kinds=["img2img"])
    assert assignment["kind"] == "img2img"
    [ref] = assignment["inputs"]
    assert (ref["name"], ref["input_id"], ref["width"]) == ("init_image", init["id"], 100)
    fetched = api.get(ref["url"], headers=auth(keys.worker_token))
    assert fetched.status_code == 200 and fetched.content == png(100, 72)
    assert api.get(ref["url"], headers=auth(keys.alice_token)).status_code == 403


def test_bad_image_to_image_input_is_a_422_or_404_at_submit(api: TestClient, keys: Keys) -> None:
    init = upload(api, keys.alice_token, png(64, 64)).json()["id"]
    small_mask = upload(api, keys.alice_token, png(32, 32)).json()["id"]
    other = upload(api, keys.bob_token, png()).json()["id"]
    wrong_size = submit(
        api,
        keys.alice_token,
        "inpaint",
        prompt="x",
        model="demo",
        init_image=init,
        mask=small_mask,
    )
    assert wrong_size.status_code == 422
    assert wrong_size.json()["detail"][0]["loc"] == ["body", "params", "mask"]
    assert "the mask is 32x32 but the init image is 64x64" in wrong_size.text
    not_yours = submit(api, keys.alice_token, "img2img", prompt="x", model="demo", init_image=other)
    assert not_yours.status_code == 404 and "upload it first" in not_yours.text
    no_steps = submit(
        api,
        keys.alice_token,
        "img2img",
        prompt="x",
        model="demo",
        init_image=init,
        strength=0.01,
        steps=10,
    )
    assert no_steps.status_code == 422 and "leaves no denoising step" in no_steps.text
    outside = submit(
        api,
        keys.alice_token,
        "img2img",
        prompt="x",
        model="demo",
        init_image=init,
        strength=1.5,
    )
    assert outside.status_code == 422
    assert outside.json()["detail"][0]["loc"][-1] == "strength"


def test_a_worker_never_receives_a_kind_it_does_not_serve(api: TestClient, keys: Keys) -> None:
    assert submit(api, keys.alice_token, "txt2img", **TXT2IMG).status_code == 201
    assert claim(api, keys, kinds=["img2img"]) is None
    assert claim(api, keys, kinds=["no-such-kind"]) is None
    assert claim(api, keys, kinds=["txt2img"]) is not None


def test_jobs_a_worker_cannot_run_never_hide_one_it_can(api: TestClient, keys: Keys) -> None:
    """16 big (paid, so higher priority) jobs ahead of a small one: a worker limited to
    256x256 still gets the small one, though the ranking window is 16 jobs wide."""
    for _ in range(16):
        assert (
            submit(
                api, keys.bob_token, "txt2img", **{**TXT2IMG, "width": 512, "height": 512}
            ).status_code
            == 201
        )
    small = submit(api, keys.alice_token, "txt2img", **{**TXT2IMG, "width": 256, "height": 256})
    assignment = claim(api, keys, max_pixels=256 * 256)
    assert assignment and assignment["job_id"] == small.json()["id"]


def test_admins_register_models_over_the_api(api: TestClient, keys: Keys) -> None:
    body = {
        "name": "remote-lora",
        "source": "https://models.example.com/style.safetensors",
        "kind": "lora",
        "base": "sd15",
        "sha256": "a" * 64,
        "size_bytes": 1234,
        "trigger_words": ["stylez"],
    }
    made = api.post("/v1/admin/models", json=body, headers=auth(keys.admin_token))
    assert made.status_code == 201, made.text
    assert made.json()["kind"] == "lora" and made.json()["trigger_words"] == ["stylez"]
    pickle = {**body, "source": "https://models.example.com/style.ckpt"}
    refused = api.post("/v1/admin/models", json=pickle, headers=auth(keys.admin_token))
    assert refused.status_code == 422 and "pickle" in refused.text
    unhashed = {k: v for k, v in body.items() if k != "sha256"}
    assert (
        api.post("/v1/admin/models", json=unhashed, headers=auth(keys.admin_token)).status_code
        == 422
    )
    assert (
        api.post("/v1/admin/models", json=body, headers=auth(keys.alice_token)).status_code == 403
    )
