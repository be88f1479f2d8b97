"""A job as a combo-capable engine takes it: the task, the request, the job's models and what
the job adds beyond the plain generation fields. Torch-free, so handlers can build one without
importing the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagefleet.worker.engines.base import Txt2ImgRequest
from imagefleet.worker.engines.model_specs import ModelSpec
from imagefleet.worker.engines.timings import StageClock

if TYPE_CHECKING:
    from PIL import Image

    from imagefleet.worker.engines.components import Task


@dataclass(frozen=True)
class ComboOptions:
    """What a job may add to its request beyond the plain generation fields."""

    control_image: Image.Image | None = None  # the ControlNet's condition, resized to the output
    refiner_steps: int | None = None  # refiner steps after a complete base run
    refiner_switch: float | None = None  # or: the base's share of the schedule
    clip_skip: int | None = None  # A1111's numbering: 2 = the penultimate layer
    hires: HiresPass | None = None


@dataclass(frozen=True)
class HiresPass:
    """Hires fix: the image upscaled to ``width`` x ``height``, then an image-to-image pass."""

    width: int
    height: int
    steps: int
    strength: float


@dataclass
class ComboJob:
    """One job for the engine: what to make, with which models, timed into ``clock``."""

    task: Task
    request: Txt2ImgRequest
    models: Sequence[ModelSpec]
    combo_key: str | None = None  # the orchestrator's key, reported back with claims
    options: ComboOptions = field(default_factory=ComboOptions)
    clock: StageClock = field(default_factory=StageClock)
