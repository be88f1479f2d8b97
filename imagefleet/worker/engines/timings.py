"""Seconds spent in each stage of a job, measured where the work happens.

Cost on cheap GPUs is decided by what a job waits for: a download, a load from disk, adapters
applied to a resident model, the denoising loop, the VAE decode, the upload. Each is timed
separately so the orchestrator (and an operator reading a job) can tell a slow link from a cold
GPU cache from a slow model. Torch-free, so the worker loop can use it without the engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

Stage = Literal["download", "load", "adapters", "inference", "vae_decode", "upload"]


@dataclass
class StageClock:
    """Accumulates seconds per stage; a stage entered twice (base and refiner) adds up."""

    download_seconds: float = 0.0  # fetching models into the disk cache
    load_seconds: float = 0.0  # disk to device: pipelines, VAEs, ControlNets
    adapters_seconds: float = 0.0  # LoRAs, embeddings and VAE swaps applied and undone
    inference_seconds: float = 0.0  # the denoising loops (base and refiner)
    vae_decode_seconds: float = 0.0
    upload_seconds: float = 0.0

    @contextmanager
    def stage(self, name: Stage) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: Stage, seconds: float) -> None:
        field = f"{name}_seconds"
        setattr(self, field, getattr(self, field) + seconds)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
