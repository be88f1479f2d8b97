"""Progress across every denoising pass of a job: base, refiner and hires, for each image.

A job with a refiner or a hires fix runs more steps than its base pass; reporting only the
base's steps would leave progress at its last step while the second passes run. Here the total
is the sum over all passes, each pass counted at its planned steps until it starts, then at the
steps the pipeline actually runs (its `num_timesteps`: a switch point or an image-to-image
strength trims a schedule in ways only the scheduler knows exactly). The step done never goes
back; the total may move a little when a pass starts, and equals the steps run at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from imagefleet.worker.engines.base import GenerationCancelled, StepCallback, StopCheck

Callback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


class PassProgress:
    def __init__(
        self, on_step: StepCallback, should_stop: StopCheck, planned: Sequence[int]
    ) -> None:
        """`planned`: each pass's expected steps, in the order the passes run."""
        self._on_step = on_step
        # A previewing callback (worker/preview.py) also wants the latents, as in step_reporter.
        self._on_latents = getattr(on_step, "on_latents", None)
        self._should_stop = should_stop
        self._steps = [max(0, int(p)) for p in planned]
        self._next = 0

    @property
    def total(self) -> int:
        return sum(self._steps)

    def callback(self) -> Callback:
        """The diffusers `callback_on_step_end` of the next pass (call in run order)."""
        index = self._next
        self._next += 1
        if index >= len(self._steps):
            self._steps.append(0)
        started = False

        def report(pipeline: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            nonlocal started
            if not started:
                started = True
                actual = getattr(pipeline, "num_timesteps", None)
                if isinstance(actual, int) and actual > 0:
                    self._steps[index] = actual
            done = sum(self._steps[:index]) + min(step_index + 1, self._steps[index])
            self._on_step(done, self.total)
            if self._on_latents is not None and "latents" in tensors:
                self._on_latents(done, self.total, tensors["latents"])
            if self._should_stop():
                raise GenerationCancelled(f"cancelled after step {done}")
            return tensors

        return report


def planned_passes(
    steps: int,
    images: int,
    *,
    refiner_switch: float | None = None,
    refiner_steps: int | None = None,
    has_refiner: bool = False,
    hires_steps: int | None = None,
) -> list[int]:
    """Each pass's expected steps, image after image: base, then refiner, then hires."""
    per_image: list[int] = []
    if has_refiner and refiner_switch is not None:
        base = round(steps * refiner_switch)
        per_image += [base, steps - base]
    elif has_refiner:
        per_image += [steps, refiner_steps or 0]
    else:
        per_image.append(steps)
    if hires_steps is not None:
        per_image.append(hires_steps)
    return per_image * images
