"""What the LoRA training tests share: a tiny dataset, tiny hyperparameters, a checkpoint store.

The checkpoint store stands in for the artifact store the worker will upload to: the engine's
callback copies each checkpoint folder into it (the engine deletes its own copy afterwards),
and a resuming engine reads from it, as a worker on another node would after downloading.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from imagefleet.demo_model import save_demo_model
from imagefleet.training.dataset import DatasetManifest, load_instance_images
from imagefleet.training.params import LoraTrainingParams
from imagefleet.worker.training.checkpoint import CheckpointRef
from imagefleet.worker.training.engine import LoraTrainer

BASE_SHA256 = "b" * 64


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_demo_model(tmp_path_factory.mktemp("training-demo") / "pipeline")


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and results do not depend on a busy
    machine's thread scheduling."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_dataset(count: int = 3, seed: int = 0) -> DatasetManifest:
    """``count`` distinct noise images (not square, so the crop is exercised) and one prompt."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        pixels = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        images.append((f"image-{index}.png", buffer.getvalue()))
    return load_instance_images(images, "a photo of sks cat")


def tiny_params(**overrides: Any) -> LoraTrainingParams:
    fields: dict[str, Any] = {
        "output_name": "tiny-lora",
        "steps": 20,
        "resolution": 32,
        "rank": 4,
        "learning_rate": 1e-3,
        "seed": 1234,
        "checkpoint_every": 4,
        "instance_prompt": "a photo of sks cat",
    }
    return LoraTrainingParams.model_validate({**fields, **overrides})


def trainer(
    demo_dir: Path,
    work_dir: Path,
    params: LoraTrainingParams,
    dataset: DatasetManifest | None = None,
) -> LoraTrainer:
    return LoraTrainer(
        demo_dir,
        params,
        dataset or tiny_dataset(),
        base_model_sha256=BASE_SHA256,
        work_dir=work_dir,
    )


class CheckpointStore:
    """An ``on_checkpoint`` callback that keeps a copy of every checkpoint it is handed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.steps: list[int] = []
        self._arrived: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def __call__(self, step: int, folder: Path) -> None:
        shutil.copytree(folder, self.root / f"step-{step}")
        with self._lock:
            self.steps.append(step)
            self._event(step).set()

    def wait_for(self, step: int) -> None:
        if not self._event(step).wait(timeout=60):
            raise AssertionError(f"checkpoint {step} never arrived")

    def path(self, step: int) -> Path:
        return self.root / f"step-{step}"

    def refs(self) -> list[CheckpointRef]:
        return [CheckpointRef(step, self.path(step)) for step in self.steps]

    def _event(self, step: int) -> threading.Event:
        return self._arrived.setdefault(step, threading.Event())


def lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
