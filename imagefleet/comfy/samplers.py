"""ComfyUI's sampler and scheduler names, and the diffusers schedulers that run them.

Torch-free: the node specs offer exactly these names (a graph naming another sampler is refused
at submit with the list), and the worker builds the scheduler from the class name and options.
Each entry says whether it reproduces ComfyUI's sampler ("exact": the same update rule on the
same noise schedule) or approximates it (another noise source, order or spacing); docs/
workflows.md has the table. Options start from the checkpoint's own scheduler config, as the
built-in kinds do (worker/engines/schedulers.py), so its betas and prediction type hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplerMapping:
    scheduler_class: str  # a diffusers scheduler class name
    options: dict[str, Any] = field(default_factory=dict)
    exact: bool = True
    note: str = ""
    sigma_based: bool = True  # whether Karras/exponential/beta sigma spacing applies


@dataclass(frozen=True)
class ScheduleMapping:
    options: dict[str, Any]
    exact: bool = True
    note: str = ""
    needs_sigmas: bool = False  # only for sigma-based samplers


_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
_SDE_NOISE = "ComfyUI draws SDE noise from a Brownian tree; diffusers from the seed's generator"

SAMPLERS: dict[str, SamplerMapping] = {
    "euler": SamplerMapping("EulerDiscreteScheduler"),
    "euler_ancestral": SamplerMapping("EulerAncestralDiscreteScheduler"),
    "heun": SamplerMapping("HeunDiscreteScheduler"),
    "dpm_2": SamplerMapping("KDPM2DiscreteScheduler"),
    "dpm_2_ancestral": SamplerMapping("KDPM2AncestralDiscreteScheduler"),
    "lms": SamplerMapping("LMSDiscreteScheduler"),
    "dpmpp_2m": SamplerMapping("DPMSolverMultistepScheduler", _DPMPP),
    "dpmpp_2m_sde": SamplerMapping(
        "DPMSolverMultistepScheduler", _DPMPP_SDE, exact=False, note=_SDE_NOISE
    ),
    "dpmpp_2m_sde_gpu": SamplerMapping(
        "DPMSolverMultistepScheduler", _DPMPP_SDE, exact=False, note=_SDE_NOISE
    ),
    "dpmpp_3m_sde": SamplerMapping(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        exact=False,
        note="diffusers' third-order SDE multistep solver; " + _SDE_NOISE,
    ),
    "dpmpp_sde": SamplerMapping("DPMSolverSDEScheduler", exact=False, note=_SDE_NOISE),
    "dpmpp_2s_ancestral": SamplerMapping(
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        exact=False,
        note="single-step DPM-Solver++(2S) without the ancestral noise",
    ),
    "ddim": SamplerMapping("DDIMScheduler", sigma_based=False),
    "ddpm": SamplerMapping(
        "DDPMScheduler", exact=False, note="ancestral DDPM steps", sigma_based=False
    ),
    "uni_pc": SamplerMapping("UniPCMultistepScheduler", {"solver_type": "bh1"}),
    "uni_pc_bh2": SamplerMapping("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "deis": SamplerMapping(
        "DEISMultistepScheduler", exact=False, note="diffusers' DEIS multistep (order 2)"
    ),
    "lcm": SamplerMapping(
        "LCMScheduler", exact=False, note="diffusers' LCM schedule", sigma_based=False
    ),
    "ipndm": SamplerMapping(
        "PNDMScheduler",
        {"skip_prk_steps": True},
        exact=False,
        note="PLMS (PNDM without warm-up)",
        sigma_based=False,
    ),
}

SCHEDULES: dict[str, ScheduleMapping] = {
    "normal": ScheduleMapping({"timestep_spacing": "linspace"}),
    "karras": ScheduleMapping({"use_karras_sigmas": True}, needs_sigmas=True),
    "exponential": ScheduleMapping(
        {"use_exponential_sigmas": True}, needs_sigmas=True, exact=False, note="diffusers' spacing"
    ),
    "beta": ScheduleMapping(
        {"use_beta_sigmas": True}, needs_sigmas=True, exact=False, note="diffusers' beta(0.6, 0.6)"
    ),
    "simple": ScheduleMapping(
        {"timestep_spacing": "trailing"}, exact=False, note="trailing timestep spacing"
    ),
    "sgm_uniform": ScheduleMapping(
        {"timestep_spacing": "trailing"}, exact=False, note="trailing timestep spacing"
    ),
    "ddim_uniform": ScheduleMapping(
        {"timestep_spacing": "leading"}, exact=False, note="leading timestep spacing"
    ),
}

COMFY_SAMPLERS: tuple[str, ...] = tuple(SAMPLERS)
COMFY_SCHEDULERS: tuple[str, ...] = tuple(SCHEDULES)


def compatible(sampler: str, scheduler: str) -> str | None:
    """None when the pair runs here, else why not (checked at submit)."""
    if SCHEDULES[scheduler].needs_sigmas and not SAMPLERS[sampler].sigma_based:
        spaced = ", ".join(name for name, s in SCHEDULES.items() if not s.needs_sigmas)
        return f"sampler {sampler!r} has no sigma schedule for {scheduler!r}; use one of {spaced}"
    return None


def scheduler_options(sampler: str, scheduler: str) -> tuple[str, dict[str, Any]]:
    """The diffusers class name and the options that pin what the two names promise."""
    mapping = SAMPLERS[sampler]
    options = dict(mapping.options)
    if mapping.sigma_based:
        options.update(use_karras_sigmas=False)
    options.update(SCHEDULES[scheduler].options)
    return mapping.scheduler_class, options
