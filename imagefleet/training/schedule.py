"""The learning-rate schedule as a pure function of the step, shared by engine, docs and views.

The engine wraps it in a torch LambdaLR, so the scheduler's state is just its step counter and
a resumed run continues the curve exactly; the orchestrator can draw the planned curve without
torch. No step gets a zero learning rate: warm-up starts above zero and decay ends above it,
so every step the job pays for moves the weights.
"""

from __future__ import annotations

import math

from imagefleet.training.params import LrSchedule


def lr_factor(step: int, schedule: LrSchedule, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Warm-up: (step + 1) / (warmup_steps + 1) for the first warmup_steps steps. After it,
    "constant" stays at 1, "linear" falls to 1 / (decay steps) at the last step, "cosine" follows
    half a cosine from 1 towards 0 over the remaining steps.
    """
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got {step} and {total_steps}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    done = min(step - warmup_steps, decay_steps - 1)
    if schedule == "linear":
        return (decay_steps - done) / decay_steps
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done / decay_steps))
    raise ValueError(f"unknown lr_schedule {schedule!r}; allowed: constant, cosine, linear")
