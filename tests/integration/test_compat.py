"""The OpenAI and AUTOMATIC1111 compatibility APIs, driven by the real client packages
(`openai`, `webuiapi`) over HTTP against an orchestrator with a real worker generating with
the tiny demo model; and their error shapes, timeouts and field mapping without a worker."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image

from imagefleet.config import Settings
from imagefleet.models.registry import Registration, register
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.worker.loop import Worker, WorkerConfig
from tests.conftest import Keys
from tests.harness.servers import serving

pytestmark = [
    pytest.mark.usefixtures("one_cpu_thread"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@dataclass
class Fleet:
    base: str
    keys: Keys


@pytest.fixture
def fleet(
    settings: Settings, db: Database, keys: Keys, demo_dir: Path, tmp_path: Path
) -> Iterator[Fleet]:
    """An orchestrator on a real port with the demo model and one worker thread."""
    register(db, Registration("demo", str(demo_dir)))
    app_settings = settings.model_copy(
        update={"compat_default_model": "demo", "compat_wait_seconds": 120.0}
    )
    with serving(create_app(app_settings, run_duties=False)) as base:
        worker = Worker(
            WorkerConfig(
                orchestrator_url=base,
                key=keys.worker_token,
                cache_dir=tmp_path / "cache",
                node_id="compat-node",
                device="cpu",
                claim_wait_seconds=1.0,
            )
        )
        thread = threading.Thread(target=worker.run, name="compat-worker", daemon=True)
        thread.start()
        try:
            yield Fleet(base, keys)
        finally:
            worker.request_stop()
            thread.join(timeout=60)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_openai_client_generates_and_edits_images_on_the_fleet(fleet: Fleet) -> None:
    client = openai.OpenAI(
        base_url=f"{fleet.base}/v1", api_key=fleet.keys.alice_token, max_retries=0
    )
    made = client.images.generate(
        prompt="a lighthouse",
        model="dall-e-3",  # an OpenAI model name: the configured default (demo) runs it
        n=2,
        size="64x64",  # type: ignore[arg-type]
        response_format="b64_json",
        quality="standard",
        style="vivid",
        extra_body={"steps": 2, "seed": 11},
    )
    assert len(made.data) == 2
    assert all(decoded(image.b64_json or "").size == (64, 64) for image in made.data)

    linked = client.images.generate(
        prompt="a lighthouse",
        model="demo",
        size="64x64",
        extra_body={"steps": 2},  # type: ignore[arg-type]
    )
    url = linked.data[0].url or ""
    download = httpx.get(url, headers={"Authorization": f"Bearer {fleet.keys.alice_token}"})
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")

    source = Image.new("RGBA", (64, 64), (200, 30, 30, 255))
    mask = source.copy()
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent: the part to edit
    edited = client.images.edit(
        image=("in.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a blue square",
        response_format="b64_json",
        extra_body={"steps": 2},
    )
    out = decoded(edited.data[0].b64_json or "").convert("RGB")
    assert out.size == (64, 64)
    assert out.getpixel((2, 2)) == (200, 30, 30)  # outside the mask the image is kept

    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(prompt="x", model="no-such-model", size="64x64")  # type: ignore[arg-type]
    assert "no-such-model" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="x", size="100x100")  # type: ignore[arg-type]
    assert bad_size.value.body["param"] == "width"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown_field:
        client.images.generate(prompt="x", extra_body={"magic": 1})
    assert "Unrecognized request argument supplied: magic" in unknown_field.value.message
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{fleet.base}/v1", api_key="if_bad", max_retries=0).images.generate(
            prompt="x"
        )


def test_an_automatic1111_client_runs_txt2img_img2img_and_inpaint_on_the_fleet(
    fleet: Fleet,
) -> None:
    api = webuiapi.WebUIApi(
        baseurl=f"{fleet.base}/sdapi/v1",
        username="anyone",
        password=fleet.keys.alice_token,  # HTTP Basic: the key is the password
        sampler="Euler a",
        steps=2,
    )
    assert api.util_get_model_names() == [api.get_sd_models()[0]["title"]]
    assert "DPM++ 2M Karras" in api.util_get_sampler_names()
    assert {s["name"] for s in api.get_schedulers()} == {"automatic", "karras"}
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_options()["sd_model_checkpoint"].startswith("demo@1 [")
    assert api.get_progress()["progress"] == 0.0

    result = api.txt2img(
        prompt="a lighthouse",
        negative_prompt="fog",
        seed=5,
        width=64,
        height=64,
        batch_size=2,
        n_iter=2,
        cfg_scale=5.0,
        scheduler="karras",
        sampler_name="DPM++ 2M",
        restore_faces=True,  # ignored, as documented
        override_settings={"sd_model_checkpoint": api.util_get_model_names()[0]},
    )
    assert len(result.images) == 4 and result.images[0].size == (64, 64)
    assert result.info["all_seeds"] == [5, 6, 7, 8]
    assert result.info["sd_model_name"] == "demo"

    init = Image.new("RGB", (64, 64), (20, 160, 40))
    again = api.img2img(
        images=[init], prompt="a forest", denoising_strength=0.5, width=64, height=64
    )
    assert again.image.size == (64, 64)
    mask = Image.new("L", (32, 32), 0)  # another size than the image: resized, as A1111 does
    mask.paste(255, (8, 8, 24, 24))
    painted = api.img2img(
        images=[init], mask_image=mask, prompt="a lake", width=64, height=64, mask_blur=0
    )
    assert painted.image.convert("RGB").getpixel((1, 1)) == (20, 160, 40)

    bearer = httpx.post(
        f"{fleet.base}/sdapi/v1/txt2img",
        json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "unknown_field": 1},
        headers={"Authorization": f"Bearer {fleet.keys.alice_token}"},
        timeout=120,
    )
    assert bearer.status_code == 200 and len(bearer.json()["images"]) == 1


@pytest.fixture
def idle_api(settings: Settings, keys: Keys, db: Database, demo_dir: Path) -> Iterator[TestClient]:
    """No worker, and no waiting: every compatibility request answers 504 with its job."""
    register(db, Registration("demo", str(demo_dir)))
    idle = settings.model_copy(update={"compat_wait_seconds": 0.0, "compat_default_model": "demo"})
    with TestClient(create_app(idle, run_duties=False)) as api:
        yield api


def test_without_a_worker_both_apis_answer_504_naming_the_job_that_goes_on(
    idle_api: TestClient, keys: Keys
) -> None:
    alice = {"Authorization": f"Bearer {keys.alice_token}"}
    late = idle_api.post(
        "/v1/images/generations", json={"prompt": "x", "size": "64x64"}, headers=alice
    )
    assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
    job = idle_api.get(late.headers["Location"], headers=alice).json()
    assert job["status"] == "queued" and job["params"]["width"] == 64

    body = {
        "prompt": "a castle <lora:ghost:0.5>, at night",
        "width": 70,  # A1111 works on the latent grid: 64
        "height": 64,
        "sampler_name": "Euler a",
    }
    token = base64.b64encode(f"someone:{keys.alice_token}".encode()).decode()
    basic = {"Authorization": f"Basic {token}"}
    late = idle_api.post("/sdapi/v1/txt2img", json=body, headers=basic)
    # The LoRA named in the prompt is resolved at submit: an unknown one is a 404.
    assert late.status_code == 404 and "ghost" in late.json()["detail"]
    late = idle_api.post("/sdapi/v1/txt2img", json={**body, "prompt": "a castle"}, headers=basic)
    assert late.status_code == 504
    job = idle_api.get(late.headers["Location"], headers=alice).json()
    assert job["params"]["width"] == 64 and job["params"]["scheduler"] == "euler_ancestral"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enable_hr": True}, "enable_hr"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"scheduler": "exponential"}, "scheduler"),
        ({"sampler_name": "Magic"}, "sampler_name"),
        ({"override_settings": {"sd_model_checkpoint": "nope [0123abcd]"}}, None),
    ],
)
def test_a1111_requests_asking_for_what_the_fleet_cannot_do_are_refused_by_name(
    idle_api: TestClient, keys: Keys, body: dict[str, Any], field: str | None
) -> None:
    answer = idle_api.post(
        "/sdapi/v1/txt2img",
        json={"prompt": "x", **body},
        headers={"Authorization": f"Bearer {keys.alice_token}"},
    )
    if field is None:
        assert answer.status_code == 404 and "nope" in answer.json()["detail"]
    else:
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"][-1] == field
