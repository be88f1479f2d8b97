"""Low-resolution previews on the worker: latents to a small JPEG, and the step callback that
sends one every N steps (never the last, never failing the job)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from imagefleet.worker.engines.base import step_reporter
from imagefleet.worker.engines.pass_progress import PassProgress
from imagefleet.worker.preview import MAX_SIDE, PreviewingSteps, latents_to_jpeg


def test_latents_become_a_jpeg_of_at_most_64_pixels_and_a_few_kilobytes() -> None:
    latents = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 4, 24, 32)).astype("f4"))
    data = latents_to_jpeg(latents)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (MAX_SIDE, 48)
    assert len(data) < 4096
    other = latents_to_jpeg(np.zeros((2, 16, 8, 8), dtype=np.float32))  # not 4 channels: grey
    assert Image.open(io.BytesIO(other)).size == (MAX_SIDE, MAX_SIDE)


class FakePipeline:
    num_timesteps = 4


def test_every_nth_step_sends_a_preview_and_a_failing_send_is_only_logged() -> None:
    steps: list[tuple[int, int]] = []
    sent: list[tuple[int, int, int]] = []
    callback = PreviewingSteps(
        lambda s, t: steps.append((s, t)), lambda s, t, d: sent.append((s, t, len(d))), 2
    )
    report = step_reporter(callback, lambda: False, image_index=0, image_count=2)
    latents = torch.zeros(1, 4, 8, 8)
    for index in range(4):
        report(FakePipeline(), index, None, {"latents": latents})
    assert steps == [(1, 8), (2, 8), (3, 8), (4, 8)]
    assert [(s, t) for s, t, _ in sent] == [(2, 8), (4, 8)]
    assert all(0 < size < 4096 for _, _, size in sent)

    def broken(step: int, total: int, data: bytes) -> None:
        raise OSError("the orchestrator is away")

    last = PreviewingSteps(lambda s, t: None, broken, 1)
    last.on_latents(1, 2, latents)  # logged, not raised
    last.on_latents(2, 2, latents)  # the last step: the image itself follows, no preview


def test_the_multi_pass_progress_of_generation_jobs_hands_the_latents_to_previews() -> None:
    """Generation jobs report progress through PassProgress (base, refiner, hires): a previewing
    callback must get the latents there too, not only through step_reporter."""
    sent: list[int] = []
    steps = PreviewingSteps(lambda step, total: None, lambda s, t, jpeg: sent.append(s), every=1)
    progress = PassProgress(steps, lambda: False, [3])
    callback = progress.callback()
    pipeline = SimpleNamespace(num_timesteps=3)
    for index in range(3):
        callback(pipeline, index, None, {"latents": torch.zeros(1, 4, 8, 8)})
    assert sent == [1, 2]  # every step but the last: the image follows
