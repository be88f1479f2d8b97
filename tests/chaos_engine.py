"""A test-only engine that sleeps instead of running a model.

Workers use it with `--engine tests.chaos_engine:SleepEngine` (the repository root on PYTHONPATH).

The chaos harness (bench/chaos.py) needs a thousand jobs through real worker processes in a few
minutes on a small CPU, with jobs long enough that SIGKILLs and restarts land in the middle of
them. Real inference would make the run about the model; this engine keeps everything the
worker loop depends on (progress callbacks, cancellation between steps, real images of the
requested size, one per seed) and replaces the computation by a random sleep.

Settings, read when the engine is built (the worker's environment):
    IMAGEFLEET_CHAOS_SLEEP_MIN, IMAGEFLEET_CHAOS_SLEEP_MAX: seconds per job, uniform (0.2, 1.0).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

# The worker catches exactly this GenerationCancelled and builds exactly this Txt2ImgRequest,
# so the test engine shares them (from the torch-free engines.base).
from imagefleet.worker.engines.base import (
    GeneratedImage,
    GenerationCancelled,
    StepCallback,
    StopCheck,
    Txt2ImgRequest,
)

SLEEP_MIN_ENV = "IMAGEFLEET_CHAOS_SLEEP_MIN"
SLEEP_MAX_ENV = "IMAGEFLEET_CHAOS_SLEEP_MAX"
DEFAULT_SLEEP = (0.2, 1.0)
# Longest uninterrupted sleep: how late a cancellation or hand-back may be noticed.
SLICE_SECONDS = 0.05


def sleep_range(environ: dict[str, str] | None = None) -> tuple[float, float]:
    """The (min, max) job duration from the environment; a bad value fails the worker start,
    not a job, so a typo in a benchmark's settings is seen at once."""
    env = os.environ if environ is None else environ
    low = float(env.get(SLEEP_MIN_ENV, DEFAULT_SLEEP[0]))
    high = float(env.get(SLEEP_MAX_ENV, DEFAULT_SLEEP[1]))
    if low < 0 or high < low:
        raise ValueError(f"need 0 <= {SLEEP_MIN_ENV} <= {SLEEP_MAX_ENV}, got {low} and {high}")
    return low, high


class SleepEngine:
    """Duck-types DiffusersEngine (see imagefleet.worker.engines.registry.Engine)."""

    device_name = "sleep engine (test)"

    def __init__(self, device: str | None = None) -> None:
        self.device = device or "cpu"
        self.sleep_min, self.sleep_max = sleep_range()
        # Seeded from the OS: every worker process draws its own durations.
        self._random = random.Random()
        self._resident: str | None = None

    @property
    def resident_model(self) -> str | None:
        return self._resident

    def load(self, model_key: str, path: Path, config_dir: Path | None = None) -> float:
        """Nothing to load: the model files were fetched and verified by the worker already."""
        self._resident = model_key
        return 0.0

    def txt2img(
        self, request: Txt2ImgRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        """Sleeps one random duration spread over all steps of all images, reporting each step
        and checking should_stop() every slice, then returns one image per seed."""
        total = max(1, request.steps) * request.num_images
        per_step = self._random.uniform(self.sleep_min, self.sleep_max) / total
        if should_stop():
            raise GenerationCancelled("cancelled before the first step")
        for done in range(1, total + 1):
            self._sleep(per_step, should_stop, done)
            on_step(done, total)
        return [
            GeneratedImage(
                image=_picture(request.width, request.height, request.seed + index),
                seed=request.seed + index,
            )
            for index in range(request.num_images)
        ]

    @staticmethod
    def _sleep(seconds: float, should_stop: StopCheck, step: int) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(SLICE_SECONDS, left))
            if should_stop():
                raise GenerationCancelled(f"cancelled during step {step}")


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """A small real image that depends on the seed alone, so that equal seeds give equal PNGs
    (as with a real model) and a harness can tell outputs apart."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    stripe = tuple(rng.randrange(256) for _ in range(3))
    draw = ImageDraw.Draw(image)
    for x in range(rng.randrange(8), width, 8):
        draw.line([(x, 0), (x, height - 1)], fill=stripe)
    return image


class FailOnceEngine(SleepEngine):
    """The sleep engine, except that the first job this worker process runs fails (a flaky
    GPU, say): what a one-node fleet does with a job that failed on its only node."""

    device_name = "fail-once engine (test)"

    def __init__(self, device: str | None = None) -> None:
        super().__init__(device)
        self._failed = False

    def txt2img(
        self, request: Txt2ImgRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        if not self._failed:
            self._failed = True
            raise RuntimeError("injected failure: the first job on this worker fails")
        return super().txt2img(request, on_step, should_stop)
