"""What the train_lora job tests share: dataset zips, a submitted training job, a claimed
attempt and a checkpoint archive's bytes, over the lifecycle (no HTTP)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagefleet.kinds.train_lora import TrainLoraJob, TrainLoraParams
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey
from imagefleet.store.models import register_model
from imagefleet.worker_protocol import Assignment, ClaimRequest, WorkerCapabilities


@pytest.fixture(name="base_model")
def base_model_fixture(db: Database) -> None:
    """`demo`, with a base family (sd15) so that a LoRA can be trained on it."""
    with db.write() as conn:
        register_model(
            conn,
            name="demo",
            kind="checkpoint",
            source="/models/demo",
            sha256="d" * 64,
            size_bytes=1,
            now=1.0,
            base="sd15",
        )


def png(seed: int, width: int = 48, height: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def dataset_zip(images: int = 3, captions: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(images):
            archive.writestr(f"img-{index}.png", png(index))
            if captions:
                archive.writestr(f"img-{index}.txt", f"a photo of sks cat number {index}")
    return buffer.getvalue()


def upload(lifecycle: JobLifecycle, owner: ApiKey, data: bytes, content_type: str) -> str:
    return asyncio.run(lifecycle.upload_input(owner, data, content_type)).id


def train_params(**overrides: Any) -> dict[str, Any]:
    return {
        "output_name": "sks-cat",
        "base_model": "demo",
        "instance_prompt": "a photo of sks cat",
        "steps": 10,
        "resolution": 32,
        "rank": 4,
        "learning_rate": 1e-3,
        "seed": 1234,
        "checkpoint_every": 2,
        "keep_last": 2,
        **overrides,
    }


def submit_training(
    lifecycle: JobLifecycle, owner: ApiKey, webhook: Any = None, **overrides: Any
) -> str:
    params = train_params(**overrides)
    if "dataset" not in params and "instance_images" not in params:
        params["dataset"] = upload(lifecycle, owner, dataset_zip(), "application/zip")
    job = TrainLoraJob(params=TrainLoraParams.model_validate(params), webhook=webhook)
    return lifecycle.submit(owner, job)[0].id


def claim_training(
    lifecycle: JobLifecycle, worker: ApiKey, node: str = "node-a", gpu: str = "cpu"
) -> Assignment:
    request = ClaimRequest(
        worker_id=f"w-{node}",
        node_id=node,
        capabilities=WorkerCapabilities(gpu_name=gpu, kinds=["train_lora"]),
    )
    assignment = lifecycle.claim(worker, request)
    assert assignment is not None
    return assignment


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def checkpoint(
    lifecycle: JobLifecycle, worker: ApiKey, attempt_id: str, step: int, data: bytes = b"ckpt"
) -> Any:
    """The `checkpoint` transition as the route runs it (the archive streamed, then recorded)."""
    return asyncio.run(lifecycle.upload_checkpoint(worker, attempt_id, step, chunks(data)))
