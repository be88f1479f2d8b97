"""A real ComfyUI client package from PyPI (comfy-api-simplified) runs ComfyUI's default
workflow on the fleet: it posts to /prompt with HTTP Basic credentials, follows /ws until the
prompt is done, reads /history and downloads the image through /view. The orchestrator is
served over real HTTP and websockets in a thread, and a real worker loop with the diffusers
engine runs the job on the tiny demo model in another."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from comfy_api_simplified.exceptions import ComfyApiError
from PIL import Image

from imagefleet.config import Settings
from imagefleet.hashing import path_sha256
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import register_model
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine
from imagefleet.worker.loop import Worker, WorkerConfig
from tests.comfy_graphs import txt2img
from tests.conftest import Keys, sqlite_url
from tests.harness.servers import serving

pytestmark = [pytest.mark.usefixtures("one_cpu_thread"), pytest.mark.timeout(300)]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


def test_a_comfyui_client_from_pypi_runs_the_default_workflow_on_the_fleet(
    settings: Settings, db: Database, keys: Keys, demo_dir: Path, tmp_path: Path
) -> None:
    sha, size = path_sha256(demo_dir)
    with db.write() as conn:
        register_model(
            conn,
            name="demo",
            kind="checkpoint",
            source=str(demo_dir),
            sha256=sha,
            size_bytes=size,
            now=1.0,
        )
    with serving(create_app(settings)) as url:
        config = WorkerConfig(url, keys.worker_token, tmp_path / "cache", claim_wait_seconds=1.0)
        worker = Worker(config, DiffusersEngine("cpu"))
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1}, daemon=True)
        thread.start()
        try:
            api = ComfyApiWrapper(url, user="comfy", password=keys.alice_token)
            workflow = ComfyWorkflowWrapper(txt2img("demo.safetensors", steps=2, size=64))
            workflow.set_node_param("KSampler", "seed", 1234)
            images = api.queue_and_wait_images(workflow, "Save Image")
            with pytest.raises(ComfyApiError, match="401"):
                ComfyApiWrapper(url).get_queue()
        finally:
            worker.request_stop()
            thread.join(timeout=60)
    [(name, data)] = images.items()
    assert name.startswith("ComfyUI_") and name.endswith("_.png")
    image = Image.open(io.BytesIO(data))
    assert image.size == (64, 64)
    assert json.loads(image.text["prompt"])["3"]["inputs"]["seed"] == 1234  # type: ignore[attr-defined]
