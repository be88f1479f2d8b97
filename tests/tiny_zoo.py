"""The tiny model zoo, built once per test process, and helpers to run jobs on it.

Building every tiny model takes several seconds, so modules share one copy (pytest gives each
module its own instance of a session fixture imported into it; a process-wide cache does not).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagefleet.hashing import path_sha256
from imagefleet.tiny_models.zoo import TinyZoo, build_zoo
from imagefleet.worker.engines.components import Task
from imagefleet.worker.engines.generation import RefinerPass, generate
from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.engines.model_specs import ModelSpec
from imagefleet.worker.engines.timings import StageClock

PROMPT = "a photo of the cat"


@functools.cache
def tiny_zoo() -> TinyZoo:
    root = Path(tempfile.mkdtemp(prefix="imagefleet-zoo-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_zoo(root / "zoo")


@functools.cache
def spec(
    path: Path,
    kind: str,
    role: str | None = None,
    weight: float | None = None,
    triggers: tuple[str, ...] = (),
) -> ModelSpec:
    sha, size = path_sha256(path)
    return ModelSpec(
        name=path.name,
        sha256=sha,
        size_bytes=size,
        source=str(path),
        kind=kind,
        role=role or kind,
        weight=weight,
        trigger_words=triggers,
    )


def render(
    manager: ModelManager,
    models: list[ModelSpec],
    *,
    task: Task = "txt2img",
    prompt: str = PROMPT,
    clock: StageClock | None = None,
    switch: float | None = None,
    refiner_steps: int | None = None,
    **call: Any,
) -> np.ndarray:
    """One 64x64, 2-step image of the combo, as float pixels."""
    clock = clock or StageClock()
    with manager.prepare(models, task=task, clock=clock) as ready:
        arguments: dict[str, Any] = {
            "prompt": prompt,
            "num_inference_steps": 2,
            "generator": torch.Generator().manual_seed(0),
            **call,
        }
        if task in ("txt2img", "inpaint"):
            # An inpainting pipeline, like txt2img, defaults to the UNet's native size.
            arguments.setdefault("height", 64)
            arguments.setdefault("width", 64)
        if ready.controlnet_scale is not None:
            arguments["controlnet_conditioning_scale"] = ready.controlnet_scale
        refiner = None
        if ready.refiner is not None:
            refiner = RefinerPass(ready.refiner, switch=switch, steps=refiner_steps)
        image = generate(ready.pipeline, arguments, clock, refiner=refiner)[0]
    return np.asarray(image).astype(np.float64)


def difference(left: np.ndarray, right: np.ndarray) -> float:
    """Mean absolute pixel difference (0..255)."""
    return float(np.abs(left - right).mean())
