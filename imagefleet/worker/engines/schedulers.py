"""The one table from sampler names (imagefleet/samplers.py) to diffusers scheduler classes.

Each entry starts from the scheduler config the checkpoint ships with, which keeps its noise
schedule (betas, prediction type, timestep spacing), and pins what the sampler's name promises,
so that e.g. "euler" is never silently Karras-spaced because the checkpoint's default
scheduler was. The pairings follow diffusers' own table of A1111 / k-diffusion equivalents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from diffusers.configuration_utils import ConfigMixin

# Imported from their defining modules: the package root re-exports them in a way type
# checkers resolve to placeholder classes.
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_dpmsolver_sde import DPMSolverSDEScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import (
    EulerAncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler
from diffusers.schedulers.scheduling_lcm import LCMScheduler
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from imagefleet.samplers import Sampler, resolve_sampler


@dataclass(frozen=True)
class SchedulerSpec:
    """How to derive one named sampler from the scheduler config a checkpoint ships with."""

    cls: type[ConfigMixin]  # a scheduler class; its config half is what builds it
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, base_config: Mapping[str, Any]) -> SchedulerMixin:
        return cast(SchedulerMixin, self.cls.from_config(dict(base_config), **self.options))


_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
_KARRAS = {"use_karras_sigmas": True}
_LINEAR = {"use_karras_sigmas": False}

SCHEDULERS: dict[Sampler, SchedulerSpec] = {
    Sampler.ddim: SchedulerSpec(DDIMScheduler),
    Sampler.euler: SchedulerSpec(EulerDiscreteScheduler, _LINEAR),
    Sampler.euler_ancestral: SchedulerSpec(EulerAncestralDiscreteScheduler),
    Sampler.heun: SchedulerSpec(HeunDiscreteScheduler, _LINEAR),
    Sampler.lms: SchedulerSpec(LMSDiscreteScheduler, _LINEAR),
    # SD's own PNDM config skips the Runge-Kutta warm-up; without it a few steps cost many more.
    Sampler.pndm: SchedulerSpec(PNDMScheduler, {"skip_prk_steps": True}),
    Sampler.dpmpp_2m: SchedulerSpec(DPMSolverMultistepScheduler, {**_DPMPP_2M, **_LINEAR}),
    Sampler.dpmpp_2m_karras: SchedulerSpec(DPMSolverMultistepScheduler, {**_DPMPP_2M, **_KARRAS}),
    Sampler.dpmpp_sde: SchedulerSpec(DPMSolverSDEScheduler, _LINEAR),
    Sampler.dpmpp_sde_karras: SchedulerSpec(DPMSolverSDEScheduler, _KARRAS),
    Sampler.dpmpp_2m_sde: SchedulerSpec(DPMSolverMultistepScheduler, {**_DPMPP_2M_SDE, **_LINEAR}),
    Sampler.dpmpp_2m_sde_karras: SchedulerSpec(
        DPMSolverMultistepScheduler, {**_DPMPP_2M_SDE, **_KARRAS}
    ),
    Sampler.unipc: SchedulerSpec(UniPCMultistepScheduler),
    # Meant for LCM-distilled checkpoints and LoRAs (4 to 8 steps); it runs on any SD model.
    Sampler.lcm: SchedulerSpec(LCMScheduler),
}


def scheduler_spec(name: str) -> SchedulerSpec:
    """The spec for a sampler name (API name, A1111 label or alias); ValueError if unknown."""
    sampler = resolve_sampler(name)
    if sampler is None:
        allowed = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown scheduler {name!r}; allowed: {allowed}")
    return SCHEDULERS[sampler]


def seed_scheduler(scheduler: SchedulerMixin, seed: int) -> None:
    """Makes a scheduler's own noise come from ``seed``.

    Most samplers draw their noise from the generator the pipeline passes them, but DPM++ SDE
    draws it from a Brownian tree with a seed of its own, random unless set; without this an
    SDE image could not be reproduced from its seed. The tree is rebuilt at each
    ``set_timesteps``, so setting the seed before each image is enough.
    """
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = seed
