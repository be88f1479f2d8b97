"""The comfy graph engine runs API-format graphs on the tiny models through the real handler:
the model manager's combo (LoRA, ControlNet), the denoising loop, img2img from an upload."""

from __future__ import annotations

import functools
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagefleet.demo_model import build_demo_pipeline
from imagefleet.hashing import path_sha256
from imagefleet.tiny_models.controlnet import build_controlnet, save_controlnet_folder
from imagefleet.tiny_models.lora import write_lora
from imagefleet.worker.engines.base import GenerationCancelled
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile
from imagefleet.worker.handlers.comfy import ComfyHandler
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker_protocol import Assignment, InputRef, ModelRef
from tests.comfy_graphs import lora_controlnet_img2img, txt2img

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
IMAGE_ID = "ab" * 16


@functools.cache
def _models(root: Path) -> dict[str, ModelRef]:
    pipeline = build_demo_pipeline(0)
    pipeline.save_pretrained(str(root / "demo"), safe_serialization=True)
    paths = {
        ("demo", "checkpoint"): root / "demo",
        ("tiny-lora", "lora"): write_lora(
            pipeline, root / "lora.safetensors", layout="peft", seed=1
        ),
        ("tiny-controlnet", "controlnet"): save_controlnet_folder(
            build_controlnet(pipeline, 2), root / "controlnet"
        ),
    }
    refs = {}
    for (name, kind), path in paths.items():
        sha, size = path_sha256(path)
        refs[name] = ModelRef(
            name=name,
            version=1,
            kind=kind,
            base="sd15",
            role=kind,
            source=str(path),
            sha256=sha,
            size_bytes=size,
        )
    return refs


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelRef]:
    return _models(tmp_path_factory.mktemp("comfy-models"))


@pytest.fixture(scope="module")
def handler() -> ComfyHandler:
    return ComfyHandler()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("comfy-cache"))


def _init_png() -> bytes:
    gradient = np.linspace(0, 255, 80 * 80 * 3).reshape(80, 80, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="PNG")
    return buffer.getvalue()


def run_graph(
    handler: ComfyHandler,
    cache: ModelCache,
    graph: dict[str, Any],
    refs: list[ModelRef],
    *,
    steps: list[tuple[int, int]] | None = None,
    stop: bool = False,
) -> list[OutputFile]:
    image = _init_png()
    inputs = [
        InputRef(
            name=f"node_{node_id}",
            input_id=node["inputs"]["image"],
            url=f"/v1/inputs/{node_id}",
            sha256=hashlib.sha256(image).hexdigest(),
            content_type="image/png",
            width=80,
            height=80,
        )
        for node_id, node in graph.items()
        if node["class_type"] == "LoadImage"
    ]
    assignment = Assignment(
        job_id="j",
        attempt_id="a",
        fencing_token=1,
        lease_seconds=30,
        lease_expires_at=datetime.now(UTC),
        kind="comfy",
        params={"graph": graph},
        models=refs,
        inputs=inputs,
    )
    progress = steps if steps is not None else []
    ctx = JobContext(
        assignment=assignment,
        engine=DiffusersEngine("cpu"),
        cache=cache,
        fetch=lambda url: image,
        on_step=lambda done, total: progress.append((done, total)),
        should_stop=lambda: stop,
    )
    return handler.run(ctx)


def pixels(output: OutputFile) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(output.data))).astype(np.float64)


def test_the_default_workflow_saves_a_png_that_carries_the_graph(
    handler: ComfyHandler, cache: ModelCache, models: dict[str, ModelRef]
) -> None:
    steps: list[tuple[int, int]] = []
    graph = txt2img("demo.safetensors", batch=2)
    files = run_graph(handler, cache, graph, [models["demo"]], steps=steps)
    assert [(f.width, f.height) for f in files] == [(64, 64), (64, 64)]
    assert json.loads(Image.open(io.BytesIO(files[0].data)).text["prompt"]) == graph
    assert steps[-1] == (2, 2)


def test_a_graph_with_lora_controlnet_and_img2img_runs_and_each_part_counts(
    handler: ComfyHandler, cache: ModelCache, models: dict[str, ModelRef]
) -> None:
    def combo(lora_weight: float) -> list[ModelRef]:
        lora = models["tiny-lora"].model_copy(update={"weight": lora_weight})
        return [models["demo"], lora, models["tiny-controlnet"]]

    full = run_graph(handler, cache, lora_controlnet_img2img(IMAGE_ID), combo(0.8))
    assert [(f.width, f.height) for f in full] == [(64, 64)]
    no_lora = run_graph(handler, cache, lora_controlnet_img2img(IMAGE_ID), combo(0.0))
    no_control = run_graph(
        handler, cache, lora_controlnet_img2img(IMAGE_ID, control_strength=0.0), combo(0.8)
    )
    assert np.abs(pixels(full[0]) - pixels(no_lora[0])).mean() > 0.5
    assert np.abs(pixels(full[0]) - pixels(no_control[0])).mean() > 0.5
    # img2img from the upload: a small denoise stays near the encoded-then-decoded upload.
    graph = lora_controlnet_img2img(IMAGE_ID, denoise=0.1)
    gentle = run_graph(handler, cache, graph, combo(0.8))
    graph["11"]["inputs"]["samples"] = ["9", 0]  # decode the encoded upload, no sampling
    round_trip = pixels(run_graph(handler, cache, graph, combo(0.8))[0])
    assert (
        np.abs(pixels(gentle[0]) - round_trip).mean() < np.abs(pixels(full[0]) - round_trip).mean()
    )


def test_a_cancelled_run_stops_and_a_combo_without_the_graphs_model_is_refused(
    handler: ComfyHandler, cache: ModelCache, models: dict[str, ModelRef]
) -> None:
    with pytest.raises(GenerationCancelled):
        run_graph(handler, cache, txt2img("demo"), [models["demo"]], stop=True)
    graph = lora_controlnet_img2img(IMAGE_ID)
    with pytest.raises(InvalidJobInput, match="not in the job's combo"):
        run_graph(handler, cache, graph, [models["demo"], models["tiny-controlnet"]])


def test_an_sdxl_checkpoint_runs_the_default_workflow(
    handler: ComfyHandler, cache: ModelCache, tmp_path: Path
) -> None:
    from imagefleet.tiny_models.sdxl import build_tiny_sdxl_pipeline

    build_tiny_sdxl_pipeline(0).save_pretrained(str(tmp_path / "xl"), safe_serialization=True)
    sha, size = path_sha256(tmp_path / "xl")
    ref = ModelRef(
        name="xl",
        version=1,
        kind="checkpoint",
        base="sdxl",
        source=str(tmp_path / "xl"),
        sha256=sha,
        size_bytes=size,
    )
    files = run_graph(handler, cache, txt2img("xl"), [ref])
    assert [(f.width, f.height) for f in files] == [(64, 64)]
